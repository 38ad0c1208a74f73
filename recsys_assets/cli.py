"""The pipeline's subcommands of `recsys`: generate a world, materialize the asset graph, run a
real-data benchmark. Registered as `recsys.commands` entry points and dispatched by
`recsys_core.cli`; each imports its heavy dependencies only when it runs."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from recsys_core.cli import Command

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_USERS = 10_000
DEFAULT_PLACES = 10_000
DEFAULT_WORLD_SEED = 42


def _world_size_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=DEFAULT_USERS)
    parser.add_argument("--places", type=int, default=DEFAULT_PLACES)
    parser.add_argument("--seed", type=int, default=DEFAULT_WORLD_SEED)
    parser.add_argument(
        "--world",
        choices=["v2", "v1"],
        default="v2",
        help="the synthetic world: v2 (hidden tastes, friendships, late joiners, new places, drift) "
        "or v1 (preference from the profile columns alone)",
    )
    parser.add_argument(
        "--start-date",
        default="",
        help="the synthetic world's first day, YYYY-MM-DD (moved back to its Monday; default: WorldConfig's); "
        "a world that ends near today lets events posted now join its time split",
    )


def _generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True)
    _world_size_arguments(parser)


def _generate(args: argparse.Namespace) -> None:
    import pyarrow.parquet as pq

    from recsys_assets.resources import world_source_from_spec
    from recsys_core.synthetic.world import generate_world
    from recsys_core.vocabulary import BUILTIN

    source = world_source_from_spec("synthetic", args.users, args.places, args.seed, args.world, args.start_date)
    config = source.world_config()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in generate_world(config).items():
        pq.write_table(table, out / f"{name}.parquet")
        print(f"{out / (name + '.parquet')}: {table.num_rows} rows")
    print(f"{BUILTIN.save(out)}: the vocabulary ({BUILTIN.n_cities} cities, {len(BUILTIN.tags)} tags)")


def _materialize_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--source",
        default="synthetic",
        help="where the world comes from: synthetic (default; sized by --users/--places/--seed); "
        "parquet:DIR (users/places/interactions[/user_user_edges/friend_labels].parquet with any of the contract's "
        "columns, the required ones at least, and vocabulary.json); lightgcn:DIR (train.txt: user item item ...); "
        "lastfm:DIR (listens_train.txt: user artist count; friends_train.txt: user user); "
        "events:FILE (.csv/.tsv/.parquet: user_id,item_id[,timestamp,count,city,category]); "
        "postgres:DSN (tables users, places, interactions[, user_user_edges, friend_labels] and vocabulary)",
    )
    source.add_argument("--world-dir", help="alias of --source parquet:DIR")
    parser.add_argument("--cities", nargs="*", help="city partitions (default: all)")
    parser.add_argument("--max-steps", type=int, help="training steps of GraphRec (default: TrainingSettings)")
    parser.add_argument("--time-budget", type=float, help="seconds a training may take before it stops early")
    parser.add_argument("--baseline-budget", type=float, help="seconds per trained baseline in the evaluation")
    parser.add_argument("--resume", action="store_true", help="continue a killed training from its last checkpoint")
    parser.add_argument(
        "--publish-as",
        choices=["live", "candidate"],
        help="how the daemon's retrains reach users: live (default) replaces the served model; candidate serves "
        "it beside live to --candidate-share of users for an A/B test (with nothing live it goes live)",
    )
    parser.add_argument("--candidate-share", type=float, help="share of users an experiment sends to the candidate")
    parser.add_argument(
        "--auto-promote", action="store_true", help="make the candidate live when online_metrics decides promote"
    )
    _world_size_arguments(parser)


def _materialize(args: argparse.Namespace) -> None:
    from dagster import DagsterInstance

    from recsys_assets.definitions import build_definitions
    from recsys_assets.materialize import materialize_all
    from recsys_assets.resources import ReleasePolicy, TrainingSettings, record_settings, world_source_from_spec

    spec = f"parquet:{args.world_dir}" if args.world_dir else args.source
    source = world_source_from_spec(spec, args.users, args.places, args.seed, args.world, args.start_date)
    knobs = {
        "max_steps": args.max_steps,
        "time_budget_s": args.time_budget,
        "baseline_budget_s": args.baseline_budget,
        "resume": args.resume or None,
    }
    training = TrainingSettings(**{k: v for k, v in knobs.items() if v is not None})
    policy = {"publish_as": args.publish_as, "candidate_share": args.candidate_share, "auto_promote": args.auto_promote}
    release = ReleasePolicy(**{k: v for k, v in policy.items() if v not in (None, False)})
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "var" / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    # The daemon's runs on this instance (`make dagster`) continue this world with these settings.
    recorded = record_settings(source, training, home, release)
    with DagsterInstance.get() as instance:
        defs = build_definitions(world_source=source, training=training, release=release)
        materialize_all(defs, instance, args.cities)
    print(f"materialized; DAGSTER_HOME={home} (world, training and release settings recorded in {recorded.name})")


def _benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=["gowalla", "lastfm"])
    parser.add_argument("--data-dir", required=True, help="the dataset's directory (e.g. ../shared/datasets/gowalla)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-budget-min", type=float, default=15.0)


def _benchmark(args: argparse.Namespace) -> None:
    if args.k < 1 or args.time_budget_min <= 0:
        raise ValueError("--k must be >= 1 and --time-budget-min > 0")
    if not Path(args.data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {args.data_dir} is not a directory")
    import psutil
    import torch

    from recsys_assets.benchmark import BenchmarkConfig, run_benchmark

    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    # As a command, the budget counts from the start of the process: interpreter and imports are part of it.
    started_s_ago = time.time() - psutil.Process().create_time() if args.is_process else 0.0
    config = BenchmarkConfig(args.dataset, args.data_dir, args.out, args.k, args.seed, args.time_budget_min)
    report = run_benchmark(config, already_spent_s=started_s_ago)
    for row in report["places"]:
        recall = row.get(f"recall@{args.k}", float("nan"))
        print(f"places  {row['part']:<4} {row['model']:<18} recall@{args.k} {recall:.4f}")
    print(
        f"wrote {args.out} from {report['served']['model_version']} in {report['total_seconds']:.0f}s "
        f"(peak RSS {report['peak_rss_mb']:.0f} MB); the run's instance is {report['instance']}"
    )


GENERATE = Command("write a synthetic world as Parquet files in the data contract", _generate_arguments, _generate)
MATERIALIZE = Command(
    "materialize every asset for every city in the project's Dagster instance", _materialize_arguments, _materialize
)
BENCHMARK = Command(
    "materialize the asset graph on a public dataset within a time budget; write its served top-K and report.json",
    _benchmark_arguments,
    _benchmark,
)
