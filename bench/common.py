"""Shared plumbing of the benchmarks: isolated measurement and the results file."""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import os

RESULTS = Path(__file__).resolve().parent / "results.json"


def machine() -> dict[str, object]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(module: str, *args: str) -> dict[str, object]:
    """Run `python -m module args` in a fresh process so its peak memory is its own; it prints JSON last."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", module, *args], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(time.perf_counter() - started, 2)
    return result


def write_section(name: str, figures: dict[str, object]) -> None:
    """Merge one section into bench/results.json, keeping the other sections."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[name] = {**figures, "machine": machine(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
