"""`make bench`: run every benchmark section and write bench/results.json.

`--only reload` runs one section (here: 2 minutes of mixed load on the real service while a new
manifest is published). A section whose `verdict` misses a target or is inconclusive (the
machine was too busy to measure) is still written, and the command then exits 1."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from bench.common import RESULTS, run_isolated, write_section

SECTIONS = {
    "foundation": "bench.foundation",
    "model": "bench.model_quality",
    "graphrec_variants": "bench.graphrec_variants",
    "serving": "bench.serving_latency",
    "reload": "bench.reload_load",
    "events": "bench.events_ingest",
    "ab": "bench.ab_simulation",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="sections to run (default: all)")
    parser.add_argument(
        "--args",
        default="",
        help="options for the one section given with --only, e.g. "
        "--only reload --args='--nice -10 --keep' (see python -m bench.reload_load -h)",
    )
    args = parser.parse_args()
    if args.args and len(args.only or ()) != 1:
        parser.error("--args needs exactly one section in --only")
    failed = []
    for name in args.only or SECTIONS:
        print(f"== {name}", flush=True)
        figures = run_isolated(SECTIONS[name], *shlex.split(args.args))
        write_section(name, figures)
        print(json.dumps(figures, indent=2))
        verdict = figures.get("verdict", {})
        if verdict.get("pass") is False:
            failed.append(f"{name}: missed {', '.join(k for k, ok in verdict['checks'].items() if not ok)}")
        elif "pass" in verdict and verdict["pass"] is None:
            failed.append(f"{name}: inconclusive, {verdict.get('inconclusive_because')}")
    print(f"results written to {RESULTS}")
    if failed:
        sys.exit("targets not shown to be met: " + "; ".join(failed))


if __name__ == "__main__":
    main()
