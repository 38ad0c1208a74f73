"""A small HTTP/1.1 load generator (its own process, keep-alive connections, asyncio).

Open loop (`--rate`): request i is due at t0 + i / rate whatever happened before; it is
sent on a free keep-alive connection or a new one, so a slow response never delays the next
send (no coordinated omission). Latency is measured from the moment the request is written;
how late the generator itself sent (`send_lag`, timer granularity of the event loop) is
reported beside it, so a late generator cannot pass for a slow server or the other way round.
The targets may mix endpoints: figures are also given per endpoint (the path before `?`), with
counts by status (`connection_error` when no answer came); `--samples-out` keeps every request
for latencies by time window. Closed loop (`--concurrency`, no rate): each connection sends its
next request as soon as the last answer arrives; the completion rate is the saturation
throughput. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import numpy as np


class Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, target: str) -> int:
        if self.reader is None or self.writer is None:  # both are set together
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\nConnection: keep-alive\r\n\r\n".encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await self.reader.readexactly(length)
        return status


def endpoint_of(target: str) -> str:
    """`/recommend/places?user_id=1` -> `/recommend/places`: the key of per-endpoint figures."""
    return target.split("?", 1)[0]


def summarize(latency_ms: np.ndarray, lag_ms: np.ndarray | None = None, status: np.ndarray | None = None) -> dict:
    """Percentiles of one set of requests (latency from the write; `status` 0 = connection error)."""

    def pct(a: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(a, q)), 3) if len(a) else None

    out: dict[str, object] = {"requests": len(latency_ms)}
    if status is not None:
        out["failed"] = int(np.sum((status < 200) | (status > 299)))
    out.update(
        {
            "p50_ms": pct(latency_ms, 50),
            "p90_ms": pct(latency_ms, 90),
            "p99_ms": pct(latency_ms, 99),
            "p999_ms": pct(latency_ms, 99.9),
            "max_ms": round(float(latency_ms.max()), 3) if len(latency_ms) else None,
        }
    )
    if lag_ms is not None:
        out.update(
            {
                "send_lag_p50_ms": pct(lag_ms, 50),
                "send_lag_p99_ms": pct(lag_ms, 99),
                "send_lag_max_ms": round(float(lag_ms.max()), 3) if len(lag_ms) else None,
            }
        )
    return out


def save_samples(path: str, samples: dict[str, np.ndarray], endpoints: list[str]) -> None:
    """Plain numeric arrays (and the endpoint names as fixed-width text): loads without pickle."""
    np.savez(path, allow_pickle=False, endpoints=np.array(endpoints, dtype=str), **samples)


def load_samples(path: str) -> tuple[dict[str, np.ndarray], list[str]]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files if k != "endpoints"}, data["endpoints"].tolist()


async def open_loop(
    host: str,
    port: int,
    targets: list[str],
    rate: float,
    duration: float,
    samples_out: str | None = None,
    max_connections: int = 1024,
) -> dict[str, object]:
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(16):
        pool.put_nowait(Connection(host, port))
    # A server far behind would otherwise make the generator open a connection per request in
    # flight until it runs out of file descriptors, its own failure. Past the cap a request
    # waits for a connection, and that wait shows as send lag.
    slots = asyncio.Semaphore(max_connections)
    n = int(rate * duration)
    endpoints = sorted({endpoint_of(t) for t in targets})
    kind_of = [endpoints.index(endpoint_of(t)) for t in targets]
    # Per request i: when it was due and written (perf_counter), latency, status (0 = connection error).
    due_at, sent_at, latency = np.zeros(n), np.zeros(n), np.zeros(n)
    status = np.zeros(n, np.int16)
    fresh = np.zeros(n, bool)  # sent on a connection opened for it (none free in the pool)
    kind = np.array([kind_of[i % len(targets)] for i in range(n)], np.int8)

    async def one(i: int, due: float):
        async with slots:
            fresh[i] = pool.empty()
            conn = Connection(host, port) if fresh[i] else pool.get_nowait()
            sent = time.perf_counter()
            try:
                status[i] = await conn.request(targets[i % len(targets)])
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status[i] = 0
                if conn.writer is not None:
                    conn.writer.close()
                conn = Connection(host, port)
            latency[i] = time.perf_counter() - sent
            due_at[i], sent_at[i] = due, sent
            pool.put_nowait(conn)

    # One dispatcher wakes at each due time and starts that request: a slow answer never delays
    # the next send, and only in-flight requests exist as tasks.
    start_unix, start = time.time() + 0.05, time.perf_counter() + 0.05
    tasks = set()
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    ms, lag = latency * 1000, (sent_at - due_at) * 1000
    result = {
        **summarize(ms, lag, status),
        "errors": int(np.sum(status != 200)),
        "achieved_rps": round(n / elapsed, 1),
        "started_at_unix": round(start_unix, 3),
        "connections_opened": int(fresh.sum()),
        "status_counts": {
            ("connection_error" if c == 0 else str(c)): int(k)
            for c, k in zip(*np.unique(status, return_counts=True), strict=True)
        },
        "by_endpoint": {e: summarize(ms[kind == j], status=status[kind == j]) for j, e in enumerate(endpoints)},
    }
    if samples_out:
        save_samples(
            samples_out,
            {
                "sent_unix": start_unix + (sent_at - start),
                "latency_ms": ms.astype(np.float32),
                "send_lag_ms": lag.astype(np.float32),
                "status": status,
                "endpoint": kind,
                "new_connection": fresh,
            },
            endpoints,
        )
    return result


async def closed_loop(host, port, targets, concurrency, duration):
    done, errors = 0, 0
    stop = time.perf_counter() + duration

    async def worker(k: int):
        nonlocal done, errors
        conn, i = Connection(host, port), k
        while time.perf_counter() < stop:
            status = await conn.request(targets[i % len(targets)])
            errors += status != 200
            done += 1
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return {
        "requests": done,
        "errors": errors,
        "concurrency": concurrency,
        "throughput_rps": round(done / (time.perf_counter() - started), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--targets", required=True, help="JSON file with a list of request paths")
    parser.add_argument("--rate", type=float, help="requests per second (open loop)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--max-connections", type=int, default=1024, help="open loop: connections open at most")
    parser.add_argument(
        "--samples-out",
        help="open loop: also write every request (send time, latency, status, "
        "endpoint) to this .npz, for latencies by time window",
    )
    args = parser.parse_args()
    with open(args.targets) as file:
        targets = json.loads(file.read())
    random.Random(0).shuffle(targets)  # noqa: S311 - a fixed, reproducible request order, not security
    if args.rate:
        result = asyncio.run(
            open_loop(args.host, args.port, targets, args.rate, args.duration, args.samples_out, args.max_connections)
        )
    else:
        result = asyncio.run(closed_loop(args.host, args.port, targets, args.concurrency, args.duration))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
