"""Benchmark: generate the default world and build the hetero graph (goal <= 60 s, <= 4 GiB)."""

from __future__ import annotations

import json
import logging
import time

from bench.common import peak_rss_mib
from recsys_core.graph import build_from_world, graph_problems
from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.world import generate_world


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    config = WorldConfig()
    t0 = time.perf_counter()
    world = generate_world(config)
    t1 = time.perf_counter()
    bundle = build_from_world(world)
    t2 = time.perf_counter()
    if problems := graph_problems(bundle):
        raise SystemExit(f"graph is malformed: {problems}")
    print(
        json.dumps(
            {
                "users": config.n_users,
                "places": config.n_places,
                "interactions": world["interactions"].num_rows,
                "user_user_edges": world["user_user_edges"].num_rows,
                "friend_labels": world["friend_labels"].num_rows,
                "graph": bundle.summary(),
                "generate_s": round(t1 - t0, 2),
                "graph_s": round(t2 - t1, 2),
                "total_s": round(t2 - t0, 2),
                "peak_rss_mib": round(peak_rss_mib(), 1),
                "targets": {"total_s": 60, "peak_rss_mib": 4096},
            }
        )
    )


if __name__ == "__main__":
    main()
