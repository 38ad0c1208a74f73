"""Benchmark: sustained load on the real service while a new manifest version is published.

Issue 7 targets: 2 minutes at 200 req/s, places and people mixed, a new manifest published
half-way; zero failed requests (non-2xx or no answer), p99 <= 20 ms, resident memory after the
run within 10% of what it was after warm-up.

Two artifact sets from the same world, each with its own briefly trained model (different
seeds, so the embeddings, indices and model version really differ), published under their own
directories. The service (`recsys serve --workers 2`: a worker process per core) follows a
live manifest that starts as version 1; at ~60 s the benchmark writes version 2's manifest over
it (atomic rename, as the pipeline does) and each worker's watcher loads it in the background and
swaps it in. Every second the benchmark samples the service's RSS (supervisor and workers) and
asks /version which version the answering worker serves;
the load generator (its own process, open loop) keeps every request so latencies can be cut
into windows around the reload.

On a shared machine the figures measure the neighbours as much as the service: the run waits
for a quiet machine first (`--quiet-cores`, `--quiet-wait`), records how many cores other
processes used and how long the service's and load generator's main threads waited for a CPU,
and calls the verdict inconclusive when other processes used more than `--max-other-cores`.
`--nice -10` (root) favours the service and the load generator; `--keep` / `--reuse DIR` skip
generating and training on a second run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

from bench.common import (
    free_port,
    machine_cpu_jiffies,
    popen_niced,
    process_cpu_s,
    rss_mib,
    runqueue_wait_s,
    start_server,
    wait_for_quiet,
    wait_ready,
)
from bench.loadgen import load_samples, summarize
from recsys_core.graph import build_from_world
from recsys_core.manifest import ServingManifest, live_manifest_path
from recsys_core.model.config import ModelConfig
from recsys_core.retrieval.publish import publish
from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.world import generate_world
from recsys_core.taxonomy import FINE_TAGS, N_TIME_SLOTS
from recsys_core.training.config import TrainConfig
from recsys_core.training.pipeline import fit

RATE, DURATION_S, RELOAD_AT_S, WARMUP_S = 200.0, 120.0, 60.0, 10.0
TARGETS = {"failed": 0, "p99_ms": 20.0, "rss_growth_pct": 10.0}
TRAIN_BUDGET_S = 120.0  # per model: latency does not depend on how well the model ranks
AROUND_RELOAD_S = 5.0  # the reload window runs from the publication to this long after the swap

logger = logging.getLogger("bench.reload")


def mixed_targets(world: dict, rng: np.random.Generator, n_users: int = 3000) -> list[str]:
    """GET requests, varied users: 30% plain places, 30% places with a time slot and tags,
    20% plain people, 20% people with a target place in the user's city and activity tags."""
    users, places = world["users"], world["places"]
    user_ids = users.column("user_id").to_numpy()
    home = users.column("home_city_id").to_numpy()
    place_ids, place_city = places.column("place_id").to_numpy(), places.column("city_id").to_numpy()
    by_city = {c: place_ids[place_city == c] for c in np.unique(place_city)}
    picked = rng.choice(len(user_ids), min(n_users, len(user_ids)), replace=False)
    targets = []
    for k, row in enumerate(picked):
        user, tag = int(user_ids[row]), FINE_TAGS[rng.integers(len(FINE_TAGS))]
        kind = k % 10
        if kind < 3:
            targets.append(f"/recommend/places?user_id={user}&top_k=10")
        elif kind < 6:
            targets.append(
                f"/recommend/places?user_id={user}&top_k=10&time_slot={rng.integers(N_TIME_SLOTS)}&desired_tags={tag}"
            )
        elif kind < 8:
            targets.append(f"/recommend/people?user_id={user}&top_k=10")
        else:
            place = int(rng.choice(by_city[home[row]]))
            targets.append(f"/recommend/people?user_id={user}&top_k=10&target_place_id={place}&activity_tags={tag}")
    return targets


def _get_json(url: str, timeout: float = 2.0) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback URL of the service under test
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def _versions_by_worker(base: str, workers: int, tries: int = 200) -> dict[int, dict]:
    """/version of every worker: asked over new connections until each has answered (the kernel
    hands a new connection to any worker)."""
    seen: dict[int, dict] = {}
    for _ in range(tries):
        info = _get_json(f"{base}/version")
        if info:
            seen[info["worker_pid"]] = info
        if len(seen) == workers:
            break
    return seen


def _unix(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def _loadgen(
    port: int, targets_file: Path, rate: float, duration: float, samples: Path | None = None, nice: int = 0
) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--port",
        str(port),
        "--targets",
        str(targets_file),
        "--rate",
        str(rate),
        "--duration",
        str(duration),
    ]
    if samples:
        args += ["--samples-out", str(samples)]
    return popen_niced(args, nice, stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"load generator failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def _window(samples: dict[str, np.ndarray], endpoints: list[str], lo: float, hi: float) -> dict:
    """Figures of the requests sent in [lo, hi) (unix seconds)."""
    sel = (samples["sent_unix"] >= lo) & (samples["sent_unix"] < hi)
    out = summarize(samples["latency_ms"][sel], samples["send_lag_ms"][sel], samples["status"][sel])
    out["seconds"] = round(hi - lo, 1)
    if "new_connection" in samples:  # requests that found no free keep-alive connection and opened one
        fresh = sel & samples["new_connection"]
        out["on_new_connections"] = {
            k: v
            for k, v in summarize(samples["latency_ms"][fresh]).items()
            if k in ("requests", "p50_ms", "p99_ms", "max_ms")
        }
    out["by_endpoint"] = {
        e: summarize(
            samples["latency_ms"][sel & (samples["endpoint"] == j)],
            status=samples["status"][sel & (samples["endpoint"] == j)],
        )
        for j, e in enumerate(endpoints)
    }
    return out


def _timeline(samples: dict[str, np.ndarray], lo: float, hi: float, zero: float) -> list[dict]:
    """Per second in [lo, hi): requests, failures, p99 and max latency; t relative to `zero`."""
    rows = []
    for t in np.arange(np.floor(lo), np.ceil(hi)):
        sel = (samples["sent_unix"] >= t) & (samples["sent_unix"] < t + 1)
        ms = samples["latency_ms"][sel]
        if len(ms):
            rows.append(
                {
                    "t_s": round(float(t - zero), 1),
                    "requests": len(ms),
                    "failed": int(np.sum((samples["status"][sel] < 200) | (samples["status"][sel] > 299))),
                    "p99_ms": round(float(np.percentile(ms, 99)), 2),
                    "max_ms": round(float(ms.max()), 2),
                }
            )
    return rows


def prepare(work: Path, world_config: WorldConfig, train_steps: int) -> dict:
    """Two published artifact sets (versions reload-v1, reload-v2) under `work`, the request
    targets (targets.json) and the world's size (world.json)."""
    started = time.perf_counter()
    world = generate_world(world_config)
    bundle = build_from_world(world)
    models = {}
    for seed, version in ((0, "reload-v1"), (1, "reload-v2")):
        trained = fit(
            bundle,
            ModelConfig.for_vocabulary(bundle.vocabulary),
            TrainConfig(
                max_steps=train_steps, eval_every=train_steps, batch_size=8192, time_budget_s=TRAIN_BUDGET_S, seed=seed
            ),
        )
        publish(trained.model, bundle, work / version, version=version)
        models[version] = {"seed": seed, "best_step": trained.best_step, "stopped_because": trained.stopped_because}
        logger.info("published %s (%.0fs since start)", version, time.perf_counter() - started)
    (work / "targets.json").write_text(json.dumps(mixed_targets(world, np.random.default_rng(0))))
    size = {
        "users": world["users"].num_rows,
        "places": world["places"].num_rows,
        "interactions": world["interactions"].num_rows,
        "cities": len(pc.unique(world["places"].column("city_id"))),
        "models": models,
        "prepare_s": round(time.perf_counter() - started, 1),
    }
    (work / "world.json").write_text(json.dumps(size))
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=WorldConfig.n_users)
    parser.add_argument("--places", type=int, default=WorldConfig.n_places)
    parser.add_argument("--rate", type=float, default=RATE)
    parser.add_argument("--duration", type=float, default=DURATION_S)
    parser.add_argument("--reload-at", type=float, default=RELOAD_AT_S, help="seconds into the run")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument(
        "--quiet-cores",
        type=float,
        default=0.3,
        help="before the load, wait until other processes use at most this many cores",
    )
    parser.add_argument("--quiet-wait", type=float, default=900.0, help="... but at most this many seconds")
    parser.add_argument(
        "--max-other-cores",
        type=float,
        default=0.3,
        help="other processes using more than this many cores during the run makes it inconclusive "
        "(the service starved by other work, not measured)",
    )
    parser.add_argument("--workers", type=int, default=2, help="service worker processes")
    parser.add_argument(
        "--nice",
        type=int,
        default=int(os.environ.get("RECSYS_BENCH_NICE", "0")),
        help="niceness of the service and the load generator (and of their scheduler autogroups); "
        "negative (root) favours them over other work on a shared machine, e.g. -10 "
        "(default: $RECSYS_BENCH_NICE or 0)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (artifacts, targets, samples)")
    parser.add_argument("--reuse", type=Path, help="a work directory kept by --keep: skip generating and training")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(2)
    work = args.reuse or Path(tempfile.mkdtemp(prefix="recsys-bench-reload-"))
    try:
        size = (
            json.loads((work / "world.json").read_text())
            if args.reuse
            else prepare(work, WorldConfig(n_users=args.users, n_places=args.places), args.train_steps)
        )
        figures = run(work, size, args)
    finally:
        if not (args.keep or args.reuse):
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


def run(work: Path, size: dict, args: argparse.Namespace) -> dict:
    manifest_v1, manifest_v2 = (live_manifest_path(work / v) for v in ("reload-v1", "reload-v2"))
    live = live_manifest_path(work / "live")
    ServingManifest.read(manifest_v1).write(live)
    targets_file = work / "targets.json"
    targets = json.loads(targets_file.read_text())

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(port, live, "--workers", str(args.workers), nice=args.nice)
    try:
        ready_s = wait_ready(base)
        rss_ready = rss_mib(server.pid)
        logger.info(
            "server ready in %.1fs; waiting for a quiet machine (<= %.2f busy cores)", ready_s, args.quiet_cores
        )
        waited_s, busy_before = wait_for_quiet(args.quiet_cores, args.quiet_wait)
        logger.info("machine: %.2f busy cores after waiting %.0fs; warm-up", busy_before, waited_s)
        warmup = _result(_loadgen(port, targets_file, args.rate, WARMUP_S, nice=args.nice))
        if warmup["failed"]:
            raise RuntimeError(f"warm-up had failures before any reload (bad targets?): {warmup['status_counts']}")
        rss_warm = rss_mib(server.pid)
        waited_s_2, busy_before_2 = wait_for_quiet(args.quiet_cores, min(args.quiet_wait, 120.0), window_s=3.0)
        logger.info("machine: %.2f busy cores after waiting %.0fs more; the run", busy_before_2, waited_s_2)
        version_before = _versions_by_worker(base, args.workers)
        load_before = os.getloadavg()

        samples_file = work / "samples.npz"
        loadgen = _loadgen(port, targets_file, args.rate, args.duration, samples_file, nice=args.nice)
        t0 = time.time()
        cpu0 = (machine_cpu_jiffies(), process_cpu_s(server.pid), process_cpu_s(loadgen.pid), time.perf_counter())
        cpu_loadgen = cpu0[2]
        wait0 = (runqueue_wait_s(server.pid), runqueue_wait_s(loadgen.pid))
        wait_loadgen = wait0[1]
        rss, versions, published_unix = [], [], None
        while loadgen.poll() is None:
            now = time.time()
            if published_unix is None and now - t0 >= args.reload_at:
                ServingManifest.read(manifest_v2).write(live)  # what the pipeline's publish step does
                published_unix = time.time()
                logger.info("published reload-v2 at %.1fs", published_unix - t0)
            rss.append((round(now - t0, 1), round(rss_mib(server.pid), 1)))
            if loadgen.poll() is None:
                cpu_loadgen, wait_loadgen = process_cpu_s(loadgen.pid), runqueue_wait_s(loadgen.pid)
            v = _get_json(f"{base}/version")
            versions.append((round(now - t0, 1), v and v["version"], v and v["reloads"], v and v["worker_pid"]))
            time.sleep(max(0.0, 1.0 - (time.time() - now)))
        (busy1, total1), cpu_server, wall = (
            machine_cpu_jiffies(),
            process_cpu_s(server.pid),
            time.perf_counter() - cpu0[3],
        )
        waits = {"server": (runqueue_wait_s(server.pid) - wait0[0]) / wall, "loadgen": (wait_loadgen - wait0[1]) / wall}
        run_result = _result(loadgen)
        machine_cores = (busy1 - cpu0[0][0]) / max(1, total1 - cpu0[0][1]) * (os.cpu_count() or 1)
        cores = {
            "machine": machine_cores,
            "server": (cpu_server - cpu0[1]) / wall,
            "loadgen": (cpu_loadgen - cpu0[2]) / wall,
        }
        cores["others"] = cores["machine"] - cores["server"] - cores["loadgen"]
        rss_end = rss_mib(server.pid)
        time.sleep(5)
        rss_settled = rss_mib(server.pid)
        version_after = _versions_by_worker(base, args.workers)
        load_after = os.getloadavg()
    finally:
        server.terminate()
        server.wait(timeout=30)

    samples, endpoints = load_samples(str(samples_file))
    start, end = run_result["started_at_unix"], float(samples["sent_unix"].max())
    # The reload window runs from the publication until the last worker swapped.
    swapped = [v for v in version_after.values() if v["version"] == "reload-v2"]
    every_worker_swapped = len(swapped) == args.workers
    swap_unix = max(_unix(v["loaded_at"]) for v in swapped) if every_worker_swapped else None
    load_started = min(_unix(v["loaded_at"]) - v["load_seconds"] for v in swapped) if swapped else None
    reload_seen = next((t for t, v, *_ in versions if v == "reload-v2"), None)
    rss_values = [r for _, r in rss]
    before = [r for t, r in rss if published_unix and t < published_unix - t0]
    windows = {
        "whole_run": {
            k: run_result[k] for k in ("requests", "failed", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")
        }
    }
    if published_unix:
        windows["before_publication"] = _window(samples, endpoints, start, published_unix)
        if swap_unix:
            windows["reload"] = _window(samples, endpoints, published_unix, swap_unix + AROUND_RELOAD_S)
            if load_started is not None:  # always, once a worker swapped
                windows["during_load_and_swap"] = _window(samples, endpoints, load_started, swap_unix + 1.0)
            windows["after_reload"] = _window(samples, endpoints, swap_unix + AROUND_RELOAD_S, end + 1)
    rss_growth_end = 100 * (rss_end - rss_warm) / rss_warm
    checks = {
        "zero_failed": run_result["failed"] == 0,
        "p99_within_target": run_result["p99_ms"] <= TARGETS["p99_ms"],
        "reload_p99_within_target": bool(windows.get("reload")) and windows["reload"]["p99_ms"] <= TARGETS["p99_ms"],
        "every_worker_swapped_once": every_worker_swapped and all(v["reloads"] == 1 for v in swapped),
        "rss_end_within_10pct_of_warm": rss_growth_end <= TARGETS["rss_growth_pct"],
    }
    verdict: dict[str, object] = {"pass": all(checks.values()), "checks": checks}
    if cores["others"] > args.max_other_cores:
        verdict["pass"] = None
        verdict["inconclusive_because"] = (
            f"other processes used {cores['others']:.2f} cores during the run (more than {args.max_other_cores}): "
            "the service was competing with them, not measured"
        )
    return {
        "setup": (
            f"world {size['users']} users / {size['places']} places / {size['cities']} cities "
            f"({size['interactions']} interactions), two briefly trained models (seeds 0 and 1, at most "
            f"{args.train_steps} steps or {TRAIN_BUDGET_S:.0f} s each), "
            f"{args.workers} uvicorn worker process(es), manifest poll every 2 s, "
            "load generator in its own process, loopback; "
            f"{args.rate:.0f} req/s for {args.duration:.0f} s after a {WARMUP_S:.0f} s warm-up, "
            f"new manifest published at {args.reload_at:.0f} s"
            + (f"; service and load generator at nice {args.nice} (shared machine)" if args.nice else "")
        ),
        "world": size,
        "mix": {e: int(sum(t.startswith(e) for t in targets)) for e in endpoints} | {"distinct_targets": len(targets)},
        "start_to_ready_s": round(ready_s, 2),
        "warmup": {k: warmup[k] for k in ("requests", "failed", "p50_ms", "p99_ms", "max_ms")},
        "load": {
            k: run_result[k]
            for k in (
                "requests",
                "achieved_rps",
                "failed",
                "errors",
                "status_counts",
                "connections_opened",
                "p50_ms",
                "p90_ms",
                "p99_ms",
                "p999_ms",
                "max_ms",
                "send_lag_p50_ms",
                "send_lag_p99_ms",
                "send_lag_max_ms",
                "by_endpoint",
            )
        },
        "latency_windows": windows,
        "reload": {
            "by_worker": {
                pid: {
                    "before": version_before[pid]["version"] if pid in version_before else None,
                    "after": v["version"],
                    "model_after": v["model_version"],
                    "reloads": v["reloads"],
                    "load_seconds": v["load_seconds"],
                    "swapped_at_s": round(_unix(v["loaded_at"]) - start, 2),
                    "last_reload_error": v["last_reload_error"],
                }
                for pid, v in version_after.items()
            },
            "published_at_s": round(published_unix - start, 2) if published_unix else None,
            "load_started_at_s": round(load_started - start, 2) if load_started else None,
            "swapped_at_s": round(swap_unix - start, 2) if swap_unix else None,
            "first_seen_on_version_endpoint_at_s": reload_seen,
            "timeline_around_reload": (
                _timeline(samples, published_unix - 3, swap_unix + 8, start) if swap_unix and published_unix else []
            ),
        },
        "rss_mib": {
            "ready": round(rss_ready, 1),
            "after_warmup": round(rss_warm, 1),
            "max_before_publication": max(before) if before else None,
            "max": max(rss_values),
            "end_of_run": round(rss_end, 1),
            "settled_5s_after": round(rss_settled, 1),
            "growth_end_vs_warmup_pct": round(rss_growth_end, 1),
            "growth_max_vs_warmup_pct": round(100 * (max(rss_values) - rss_warm) / rss_warm, 1),
            "every_5s": [r for t, r in rss[::5]],
        },
        "version_changes": [v for k, v in enumerate(versions) if k == 0 or v[1:] != versions[k - 1][1:]],
        "machine_load": {
            "waited_for_quiet_s": [waited_s, waited_s_2],
            "busy_cores_before": {"warmup": busy_before, "run": busy_before_2},
            "cpu_cores_during_run": {k: round(v, 2) for k, v in cores.items()},
            # share of the run the main thread was ready to run but had no CPU: ~0 on a machine of its own
            "runqueue_wait_share_during_run": {k: round(v, 3) for k, v in waits.items()},
            "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "targets": TARGETS,
        "verdict": verdict,
    }


if __name__ == "__main__":
    main()
