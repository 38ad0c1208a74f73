"""The `recsys` command: generate a world, materialize the pipeline, serve recommendations.

This is the composition root: `serve` imports the service lazily, so the Dagster code
never depends on the web layer (and vice versa)."""

import argparse
import logging
import os
import time
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _generate(args: argparse.Namespace) -> None:
    import pyarrow.parquet as pq

    from recsys_core.synthetic.config import WorldConfig
    from recsys_core.synthetic.world import generate_world

    config = WorldConfig(n_users=args.users, n_places=args.places, seed=args.seed).validate()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in generate_world(config).items():
        pq.write_table(table, out / f"{name}.parquet")
        print(f"{out / (name + '.parquet')}: {table.num_rows} rows")


def _materialize(args: argparse.Namespace) -> None:
    from dagster import DagsterInstance

    from recsys_assets.definitions import build_definitions
    from recsys_assets.materialize import materialize_all
    from recsys_assets.resources import TrainingSettings, WorldSource, record_settings

    source = (
        WorldSource(kind="parquet", directory=str(Path(args.world_dir).resolve()))
        if args.world_dir
        else WorldSource(n_users=args.users, n_places=args.places, seed=args.seed)
    )
    knobs = {"max_steps": args.max_steps, "time_budget_s": args.time_budget, "baseline_budget_s": args.baseline_budget,
             "resume": args.resume or None}
    training = TrainingSettings(**{k: v for k, v in knobs.items() if v is not None})
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "var" / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    # The daemon's runs on this instance (`make dagster`) continue this world with these settings.
    recorded = record_settings(source, training, home)
    with DagsterInstance.get() as instance:
        materialize_all(build_definitions(world_source=source, training=training), instance, args.cities)
    print(f"materialized; DAGSTER_HOME={home} (world and training settings recorded in {recorded.name})")


def _serve(args: argparse.Namespace) -> None:
    from serving.cli import serve

    serve(args.host, args.port, args.manifest, args.poll_interval, args.workers)


def _benchmark(args: argparse.Namespace) -> None:
    if args.k < 1 or args.time_budget_min <= 0:
        raise ValueError("--k must be >= 1 and --time-budget-min > 0")
    if not Path(args.data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {args.data_dir} is not a directory")
    import torch

    from recsys_core.benchmark.run import BenchmarkConfig, run_benchmark

    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    import psutil

    # As a command, the budget counts from the start of the process: interpreter and imports are part of it.
    started_s_ago = time.time() - psutil.Process().create_time() if args.is_process else 0.0
    report = run_benchmark(BenchmarkConfig(args.dataset, args.data_dir, args.out, args.k, args.seed, args.time_budget_min),
                           already_spent_s=started_s_ago)
    for name, values in report["validation"].items():
        print(f"validation {name:<48} " + "  ".join(
            f"{m} {v:.4f}" if isinstance(v, float) else f"{m}: {v}" for m, v in values.items()))
    print(f"wrote {args.out} in {report['total_seconds']:.0f}s (peak RSS {report['peak_rss_mb']:.0f} MB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a synthetic world as Parquet files in the data contract")
    gen.add_argument("--out", required=True)
    mat = sub.add_parser("materialize", help="materialize every asset for every city in the project's Dagster instance")
    mat.add_argument("--world-dir", help="read the world from Parquet files here instead of generating it")
    mat.add_argument("--cities", nargs="*", help="city partitions (default: all)")
    mat.add_argument("--max-steps", type=int, help="training steps of GraphRec (default: TrainingSettings)")
    mat.add_argument("--time-budget", type=float, help="seconds a training may take before it stops early")
    mat.add_argument("--baseline-budget", type=float, help="seconds per trained baseline in the evaluation")
    mat.add_argument("--resume", action="store_true", help="continue a killed training from its last checkpoint")
    srv = sub.add_parser("serve", help="run the recommendation service (Litestar on uvicorn)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--manifest", help="serving manifest to follow (default: var/artifacts/serving/manifest.json)")
    srv.add_argument("--poll-interval", type=float, default=2.0, help="seconds between checks for a newer manifest")
    srv.add_argument("--workers", type=int, default=1,
                     help="worker processes (one per core for throughput; each holds its own copy of the served artifacts)")
    bench = sub.add_parser("benchmark", help="train on a public dataset within a time budget; write top-K files and report.json")
    bench.add_argument("dataset", choices=["gowalla", "lastfm"])
    bench.add_argument("--data-dir", required=True, help="the dataset's directory (e.g. ../shared/datasets/gowalla)")
    bench.add_argument("--out", required=True, help="output directory")
    bench.add_argument("--k", type=int, default=20)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--time-budget-min", type=float, default=15.0)
    for p in (gen, mat):
        p.add_argument("--users", type=int, default=10_000)
        p.add_argument("--places", type=int, default=10_000)
        p.add_argument("--seed", type=int, default=42)

    args = parser.parse_args(argv)
    args.is_process = argv is None  # run as the `recsys` command: the process is the run
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    handlers = {"generate": _generate, "materialize": _materialize, "serve": _serve, "benchmark": _benchmark}
    try:
        handlers[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"recsys {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
