"""Benchmark: the real service process on loopback, driven by a separate load-generator process.

Targets (issue 4): /recommend/places with top_k=10 and explanations at a steady 200 req/s,
single uvicorn worker, 2 cores: p50 <= 3 ms, p99 <= 20 ms; saturation throughput of places
and people; start-to-ready <= 10 s on the default world; resident memory.

Artifacts come from the default world and a briefly trained model (latency does not depend
on how well the model ranks), published with `recsys_core.retrieval.publish`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.common import free_port, publish_briefly_trained, rss_mib, start_server, wait_ready
from recsys_core.synthetic.config import WorldConfig
from recsys_core.taxonomy import FINE_TAGS

RATE, DURATION_S, SATURATION_S = 200.0, 30.0, 15.0


def _load(
    port: int, targets: list[str], work: Path, name: str, rate: float | None = None, duration: float = DURATION_S
) -> dict:
    path = work / f"{name}.json"
    path.write_text(json.dumps(targets))
    args = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--port",
        str(port),
        "--targets",
        str(path),
        "--duration",
        str(duration),
    ]
    args += ["--rate", str(rate)] if rate else ["--concurrency", "8"]
    out = subprocess.run(args, check=True, capture_output=True, text=True)  # noqa: S603 - our own bench.loadgen
    return json.loads(out.stdout.strip().splitlines()[-1])


def _start_experiment(manifest: Path, port: int, timeout_s: float = 60.0) -> None:
    """Publish a copy of the live version as the candidate of an experiment (share 0.5) and wait
    until the service serves it."""
    import dataclasses
    import time
    import urllib.request

    from recsys_core.feedback.releases import ServingDirectory
    from recsys_core.manifest import ServingManifest

    releases = ServingDirectory(manifest.parent)
    live = ServingManifest.read(manifest)
    releases.publish(dataclasses.replace(live, version=f"{live.version}-candidate"), "candidate", candidate_share=0.5)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as response:  # noqa: S310 - loopback
            experiment = json.loads(response.read()).get("experiment") or {}
        if experiment.get("candidate_version"):
            return
        time.sleep(0.5)
    raise RuntimeError("the service never loaded the experiment's candidate")


def measure(manifest: Path, user_ids: np.ndarray, work: Path, tags: list[str], setup: str) -> dict:
    """Start the real service on `manifest`, then drive it at 200 req/s and at saturation."""
    rng = np.random.default_rng(0)
    users = rng.choice(user_ids, min(2000, len(user_ids)), replace=False)
    places = [f"/recommend/places?user_id={u}&top_k=10" for u in users]
    people = [f"/recommend/people?user_id={u}&top_k=10" for u in users]
    port = free_port()
    server = start_server(port, manifest)
    try:
        ready_s = wait_ready(f"http://127.0.0.1:{port}")
        rss_ready = rss_mib(server.pid)
        _load(port, places, work, "warmup", rate=100.0, duration=5.0)
        figures = {
            "start_to_ready_s": round(ready_s, 2),
            "rss_mib_ready": round(rss_ready, 1),
            "places_at_200rps": _load(port, places, work, "places", rate=RATE),
        }
        if tags:
            places_ctx = [
                f"/recommend/places?user_id={u}&top_k=10&time_slot={rng.integers(6)}"
                f"&desired_tags={tags[rng.integers(len(tags))]}"
                for u in users
            ]
            figures["places_with_context_at_200rps"] = _load(port, places_ctx, work, "places_ctx", rate=RATE)
        figures |= {
            "people_at_200rps": _load(port, people, work, "people", rate=RATE),
            "places_saturation": _load(port, places, work, "places_sat", duration=SATURATION_S),
            "people_saturation": _load(port, people, work, "people_sat", duration=SATURATION_S),
            "rss_mib_after_load": round(rss_mib(server.pid), 1),
        }
        # An A/B experiment on: a candidate (a copy of live under another version) for half the users.
        _start_experiment(manifest, port)
        _load(port, places, work, "warmup_ab", rate=100.0, duration=5.0)  # past the swap's clean-up
        figures |= {
            "places_at_200rps_experiment_on": _load(port, places, work, "places_ab", rate=RATE),
            "rss_mib_two_versions": round(rss_mib(server.pid), 1),
            "targets": {"places_p50_ms": 3, "places_p99_ms": 20, "start_to_ready_s": 10},
            "setup": setup + ", 1 uvicorn worker, load generator in its own process, loopback",
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
    return figures


def main() -> None:
    """The default world (or, with `--manifest`, any published manifest, e.g. a Gowalla run's)."""
    import argparse

    from recsys_core.graph import load_graph_tensors
    from recsys_core.manifest import ServingManifest

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", help="a published serving manifest (default: publish the default world)")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="recsys-bench-serving-"))
    if args.manifest:
        manifest = Path(args.manifest)
        served = ServingManifest.read(manifest)
        user_ids = load_graph_tensors(served.graph.directory)["node/user/node_id"].numpy()
        figures = measure(manifest, user_ids, work, [], f"manifest {served.model_version} ({len(user_ids)} users)")
    else:
        manifest, bundle = publish_briefly_trained(WorldConfig(), work, steps=20)
        user_ids = bundle.data["user"].node_id.numpy()
        figures = measure(manifest, user_ids, work, list(FINE_TAGS), "default world (10k users, 10k places)")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
