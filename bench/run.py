"""`make bench`: run every benchmark section and write bench/results.json."""

from __future__ import annotations

import argparse
import json

from bench.common import RESULTS, run_isolated, write_section

SECTIONS = {"foundation": "bench.foundation", "model": "bench.model", "serving": "bench.serving"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="sections to run (default: all)")
    args = parser.parse_args()
    for name in args.only or SECTIONS:
        print(f"== {name}")
        figures = run_isolated(SECTIONS[name])
        write_section(name, figures)
        print(json.dumps(figures, indent=2))
    print(f"results written to {RESULTS}")


if __name__ == "__main__":
    main()
