"""Benchmark: POST /events on the real service (`recsys serve --workers 2`, 2 cores), from a client
in another process, with a worker SIGKILLed in the middle of a burst.

Phases, each event carrying a unique client `event_id`:
1. steady: `--rate` events/s (batches of `--batch`) for `--seconds`: acknowledged rate and latency;
2. saturation: as fast as `--threads` connections go, for `--seconds`;
3. kill: the same burst, and one worker is SIGKILLed a few seconds in (uvicorn starts a new one).
Then the service is stopped, the log is rolled into Parquet, and every acknowledged `event_id` is
looked up there: `lost` counts the acknowledged events that did not arrive (the target is 0);
`unacknowledged_stored` the ones that arrived though the client never got its 200 (a worker
killed after the fsync, before the answer): a client retrying those would send them twice, which
is what `event_id` is for.

    python -m bench --only events          (or: python -m bench.events_ingest --rate 1500)
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from bench.common import free_port, publish_briefly_trained, start_server, wait_ready
from recsys_core.feedback.store import EVENTS_ENV, EventPaths, read_events, roll_segments, stored_days
from recsys_core.synthetic.config import WorldConfig

log = logging.getLogger("bench.events")


class Client:
    """Threads posting batches over keep-alive connections; what was acknowledged, by event id."""

    def __init__(self, port: int, user_ids: np.ndarray, place_ids: np.ndarray, batch: int):
        self.port, self.user_ids, self.place_ids, self.batch = port, user_ids, place_ids, batch
        self.acked: list[str] = []
        self.sent = 0
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self._lock = threading.Lock()
        self._counter = 0

    def _body(self, rng: np.random.Generator) -> tuple[bytes, list[str]]:
        with self._lock:
            first, self._counter = self._counter, self._counter + self.batch
        now = dt.datetime.now(dt.UTC).isoformat()
        ids = [f"e{first + i}" for i in range(self.batch)]
        events = [
            {
                "type": "visit",
                "user_id": int(rng.choice(self.user_ids)),
                "place_id": int(rng.choice(self.place_ids)),
                "timestamp": now,
                "event_id": event_id,
            }
            for event_id in ids
        ]
        return json.dumps({"events": events}).encode(), ids

    def _post(self, connection: http.client.HTTPConnection, body: bytes) -> int:
        connection.request("POST", "/events", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status

    def run(self, seconds: float, threads: int, rate: float | None, seed: int) -> dict[str, Any]:
        """Post for `seconds`; `rate` events/s in all (None: as fast as the threads go)."""
        start_acked, start_sent = len(self.acked), self.sent
        latencies_from = len(self.latencies)
        deadline = time.perf_counter() + seconds
        interval = threads * self.batch / rate if rate else 0.0

        def worker(index: int) -> None:
            rng = np.random.default_rng(seed * 100 + index)
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            next_at = time.perf_counter() + index * interval / threads
            while time.perf_counter() < deadline:
                if interval:
                    pause = next_at - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    next_at += interval
                body, ids = self._body(rng)
                started = time.perf_counter()
                try:
                    status = self._post(connection, body)
                except (OSError, http.client.HTTPException):
                    status = 0  # the connection broke (a killed worker): not acknowledged
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                elapsed = time.perf_counter() - started
                with self._lock:
                    self.sent += len(ids)
                    self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
                    if status == 200:
                        self.acked.extend(ids)
                        self.latencies.append(elapsed)
            connection.close()

        started = time.perf_counter()
        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        wall = time.perf_counter() - started
        latencies = np.array(self.latencies[latencies_from:]) * 1000
        acked = len(self.acked) - start_acked
        return {
            "seconds": round(wall, 1),
            "events_sent": self.sent - start_sent,
            "events_acknowledged": acked,
            "acknowledged_per_s": round(acked / wall, 1),
            "batch_p50_ms": round(float(np.percentile(latencies, 50)), 2) if len(latencies) else None,
            "batch_p99_ms": round(float(np.percentile(latencies, 99)), 2) if len(latencies) else None,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=1500.0, help="steady phase: events per second")
    parser.add_argument("--batch", type=int, default=50, help="events per POST")
    parser.add_argument("--threads", type=int, default=4, help="client connections")
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="recsys-bench-events-"))
    manifest, bundle = publish_briefly_trained(WorldConfig(n_users=2000, n_places=2000), work, steps=5)
    events = EventPaths(work / "events")
    os.environ[EVENTS_ENV] = str(events.root)
    port = free_port()
    server = start_server(port, manifest, "--workers", "2")
    figures: dict[str, Any] = {"workers": 2, "batch": args.batch, "threads": args.threads}
    try:
        figures["start_to_ready_s"] = round(wait_ready(f"http://127.0.0.1:{port}"), 1)
        client = Client(port, bundle.data["user"].node_id.numpy(), bundle.data["place"].node_id.numpy(), args.batch)
        figures["steady"] = {"target_per_s": args.rate, **client.run(args.seconds, args.threads, args.rate, 1)}
        log.info("steady: %s", figures["steady"])
        figures["saturation"] = client.run(args.seconds, args.threads, None, 2)
        log.info("saturation: %s", figures["saturation"])
        # uvicorn's workers are spawned processes (`spawn_main`); the other child is multiprocessing's tracker
        workers = [
            w for w in psutil.Process(server.pid).children(recursive=True) if "spawn_main" in " ".join(w.cmdline())
        ]
        killed: dict[str, int] = {}

        def kill_one() -> None:
            time.sleep(args.seconds / 3)
            # the worker holding the most of the client's connections: requests are in flight on it
            victim = max(workers, key=lambda w: sum(c.status == "ESTABLISHED" for c in w.net_connections()))
            killed["pid"] = victim.pid
            killed["connections"] = sum(c.status == "ESTABLISHED" for c in victim.net_connections())
            os.kill(victim.pid, signal.SIGKILL)
            log.info("SIGKILLed worker %d (%d client connections)", victim.pid, killed["connections"])

        killer = threading.Thread(target=kill_one)
        killer.start()
        burst = client.run(args.seconds, args.threads, None, 3)
        killer.join()
        figures["kill"] = {"killed_worker": killed, **burst}
        log.info("kill: %s", figures["kill"])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    roll_segments(events)
    stored = read_events(events.store, stored_days(events.store)).column("event_id").to_pylist()
    stored_ids = set(stored)
    acked = set(client.acked)
    figures["statuses"] = client.statuses
    figures["durability"] = {
        "acknowledged": len(acked),
        "stored": len(stored),
        "lost": len(acked - stored_ids),
        "unacknowledged_stored": len(stored_ids - acked),
        "stored_twice": len(stored) - len(stored_ids),
    }
    sustained = figures["steady"]["acknowledged_per_s"]
    checks = {
        "sustains_1000_per_s": sustained >= 1000 or figures["saturation"]["acknowledged_per_s"] >= 1000,
        "nothing_acknowledged_lost": figures["durability"]["lost"] == 0,
    }
    figures["verdict"] = {"pass": all(checks.values()), "checks": checks}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
