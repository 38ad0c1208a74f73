"""Shared plumbing of the benchmarks: isolated measurement and the results file."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from recsys_core.files import READABLE_BY_ALL, write_text_atomically

RESULTS = Path(__file__).resolve().parent / "results.json"


def machine() -> dict[str, object]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(module: str, *args: str) -> dict[str, Any]:
    """Run `python -m module args` in a fresh process so its peak memory is its own; it prints JSON
    last on stdout (returned decoded). Its stderr (progress, errors) goes to ours."""
    started = time.perf_counter()
    out = subprocess.run(  # noqa: S603 - one of our own bench modules, run by this interpreter
        [sys.executable, "-m", module, *args], check=True, stdout=subprocess.PIPE, text=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(time.perf_counter() - started, 2)
    return result


def write_section(name: str, figures: dict[str, object]) -> None:
    """Merge one section into bench/results.json, keeping the other sections."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[name] = {**figures, "machine": machine(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    text = json.dumps(results, indent=2, sort_keys=True) + "\n"
    write_text_atomically(RESULTS, text, prefix=f".{RESULTS.name}-", mode=READABLE_BY_ALL)


def publish_briefly_trained(config: Any, work: Path, steps: int) -> tuple[Path, Any]:
    """A world (`WorldConfig`) and a GraphRec trained `steps` steps, published as a complete servable set
    under `work/artifacts` (what the serving benchmarks measure does not depend on how well it ranks).
    Returns the live manifest's path and the graph bundle."""
    from recsys_core.graph import build_from_world
    from recsys_core.model.config import ModelConfig
    from recsys_core.retrieval.publish import publish
    from recsys_core.synthetic.world import generate_world
    from recsys_core.training.config import TrainConfig
    from recsys_core.training.pipeline import fit

    bundle = build_from_world(generate_world(config))
    trained = fit(
        bundle,
        ModelConfig.for_vocabulary(bundle.vocabulary),
        TrainConfig(max_steps=steps, eval_every=steps, batch_size=8192, time_budget_s=60.0),
    )
    return publish(trained.model, bundle, work / "artifacts", version="bench"), bundle


# --- the real service, for the serving benchmarks --------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (a multi-worker service is a supervisor and its workers)."""
    import psutil

    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return [pid]


def _proc_read(pid: int, name: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except (FileNotFoundError, ProcessLookupError):  # a child that exited since it was listed
        return None


def rss_mib(pid: int) -> float:
    """Resident memory now (VmRSS) of a process and its descendants."""
    total = 0.0
    for p in process_tree(pid):
        for line in (_proc_read(p, "status") or "").splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def wait_ready(base: str, timeout_s: float = 120.0) -> float:
    """Seconds until GET /ready answers 200."""
    started, url = time.perf_counter(), f"{base}/ready"
    while time.perf_counter() - started < timeout_s:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 - loopback URL of the service under test
                if r.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("service never became ready")


def start_server(port: int, manifest: Path, *extra: str, nice: int = 0) -> subprocess.Popen:
    """`recsys serve` on loopback, following `manifest` (`extra`: e.g. `--workers 2`); its log is discarded.
    `nice` < 0 (root only) favours it over other work on a shared machine."""
    command = [
        sys.executable,
        "-m",
        "recsys_core.cli",
        "serve",
        "--port",
        str(port),
        "--manifest",
        str(manifest),
        *extra,
    ]
    return popen_niced(command, nice, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def popen_niced(command: list[str], nice: int = 0, **kwargs) -> subprocess.Popen:
    """Start `command`; with `nice` != 0 at that niceness, in a session of its own whose scheduler
    autogroup gets the same niceness: with autogroups on (Linux desktop default) the niceness of
    a process only counts against its own session, so that is what favours it over other
    sessions' work. Negative values need root."""
    if not nice:
        return subprocess.Popen(command, **kwargs)  # noqa: S603 - our own commands (service, load generator)
    proc = subprocess.Popen(  # noqa: S603 - our own command, under nice
        ["nice", "-n", str(nice), *command],  # noqa: S607 - coreutils nice, found on PATH
        start_new_session=True,
        **kwargs,
    )
    autogroup = Path(f"/proc/{proc.pid}/autogroup")
    if autogroup.exists():
        with contextlib.suppress(OSError):
            autogroup.write_text(str(nice))
    return proc


def machine_cpu_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, all cores, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process and its descendants have used so far."""
    total = 0
    for p in process_tree(pid):
        stat = _proc_read(p, "stat")
        if stat:
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def busy_cores(seconds: float = 2.0) -> float:
    """How many cores the machine kept busy over the next `seconds` (all processes)."""
    busy0, total0 = machine_cpu_jiffies()
    time.sleep(seconds)
    busy1, total1 = machine_cpu_jiffies()
    return (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)


def wait_for_quiet(max_cores: float, max_wait_s: float, window_s: float = 5.0) -> tuple[float, float]:
    """Wait (at most `max_wait_s`) until other work on the machine uses at most `max_cores` over
    `window_s`, so a latency benchmark does not measure someone else's job. Returns (seconds waited,
    busy cores in the last window)."""
    started = time.perf_counter()
    while True:
        busy = busy_cores(window_s)
        waited = time.perf_counter() - started
        if busy <= max_cores or waited >= max_wait_s:
            return round(waited, 1), round(busy, 2)


def runqueue_wait_s(pid: int) -> float:
    """Seconds the main threads of a process and its descendants have spent runnable but waiting
    for a CPU (schedstat), summed."""
    return sum(int(stat.split()[1]) for p in process_tree(pid) if (stat := _proc_read(p, "schedstat"))) / 1e9
