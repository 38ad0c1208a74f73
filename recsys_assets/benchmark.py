"""`recsys benchmark`: a public dataset through the product, and its files from what the product serves.

The run materializes the whole asset graph on the dataset (`lightgcn:` or `lastfm:` source) in an
instance of its own under OUT/run (the Dagster home, the artifacts and the live manifest: `recsys
serve` can serve it afterwards), with the time-bounded parts sized from the budget. The files are
written from `batch_recommendations`, the service's own scoring of every user:

- `places_top{K}.txt`: `user place place ...`, one line per user of the dataset's id universe
  (users the training file never mentions get the most popular places);
- `friends_top{K}.txt` (datasets with friendships): `user user user ...`;
- `report.json`: validation and test figures of the served models and every baseline (the pipeline's
  own held-out carve of the training file), the place model's choices, seconds per stage, peak memory.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from dagster import AssetKey, DagsterInstance

from recsys_assets.definitions import build_definitions
from recsys_assets.io_manager import latest_artifact_path, load_latest, load_latest_table
from recsys_assets.materialize import materialize_all
from recsys_assets.resources import ServingSettings, TrainingSettings, WorldSource
from recsys_core.datasets import LOADERS
from recsys_core.evaluation.compare import Comparison
from recsys_core.files import READABLE_BY_ALL, write_text_atomically
from recsys_core.training.pipeline import PEOPLE_MODEL_DIR, PLACE_MODEL_DIR

logger = logging.getLogger(__name__)

SOURCE_KIND: dict[str, Literal["lightgcn", "lastfm"]] = {"gowalla": "lightgcn", "lastfm": "lastfm"}
RUN_DIR = "run"
EVALUATION_USERS = 4000  # per held-out part: the comparison's figures within about 0.005, in a 15-minute run
PLACE_EVAL_USERS = 2500  # the place model's choices (its weight search scores each option on these)


@dataclass(frozen=True)
class BudgetShares:
    """Fractions of the whole budget for the parts that stop when their time is up; the rest of the
    graph (world, features, the graph filter, evaluation, embeddings, indices, batch scoring) takes
    what it takes: measured on Gowalla's full file at about half of a 15-minute budget."""

    graphrec: float = 0.22
    ials: float = 0.08
    baseline: float = 0.025  # each of MF-BPR, LightGCN and the two-tower


@dataclass(frozen=True)
class BenchmarkConfig:
    dataset: str
    data_dir: str
    out: str
    k: int = 20
    seed: int = 0
    time_budget_min: float = 15.0
    shares: BudgetShares = BudgetShares()

    def training(self) -> TrainingSettings:
        total = self.time_budget_min * 60.0
        return TrainingSettings(
            seed=self.seed,
            time_budget_s=max(self.shares.graphrec * total, 5.0),
            max_steps=100_000,  # time-bound: the budget says when GraphRec stops
            ials_budget_s=max(self.shares.ials * total, 1.0),
            baseline_budget_s=max(self.shares.baseline * total, 1.0),
            evaluation_users=EVALUATION_USERS,
            place_eval_users=PLACE_EVAL_USERS,
            checkpoint_every=-1,
        )


def run_benchmark(config: BenchmarkConfig, already_spent_s: float = 0.0) -> dict[str, Any]:
    """``already_spent_s``: seconds of the budget used before the call (the CLI counts its start-up)."""
    started = time.perf_counter() - already_spent_s
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = LOADERS[config.dataset](config.data_dir)  # the id universe and the popularity fallback
    if config.k > dataset.n_items:
        raise ValueError(f"k={config.k} exceeds the number of items ({dataset.n_items})")
    run = out / RUN_DIR
    shutil.rmtree(run, ignore_errors=True)  # a fresh instance: nothing of an earlier run is reused
    artifacts = run / "artifacts"
    (run / "dagster_home").mkdir(parents=True)
    source = WorldSource(kind=SOURCE_KIND[config.dataset], location=str(Path(config.data_dir).resolve()))
    serving = ServingSettings(artifact_root=str(artifacts), batch_top_k=config.k)
    defs = build_definitions(str(artifacts), source, config.training(), serving)
    with DagsterInstance.local_temp(str(run / "dagster_home")) as instance:
        stages = materialize_all(defs, instance)
        batch = load_latest_table(instance, AssetKey("batch_recommendations"), [None])
        comparison = load_latest(instance, AssetKey("model_evaluation"), [None])
        model_dir = latest_artifact_path(instance, AssetKey("trained_model"), None)
    if not isinstance(comparison, Comparison):
        raise TypeError(f"model_evaluation holds a {type(comparison).__name__}")
    place_model = json.loads((model_dir / PLACE_MODEL_DIR / "report.json").read_text())
    people_report = model_dir / PEOPLE_MODEL_DIR / "report.json"
    people_model = json.loads(people_report.read_text()) if people_report.is_file() else None
    popular = dataset.item_ids[np.argsort(-np.asarray(dataset.interactions.sum(axis=0)).ravel(), kind="stable")]
    top_places = popular[: config.k].tolist()
    _write_lists(out / f"places_top{config.k}.txt", dataset.user_ids, batch, "place_ids", lambda user: top_places)
    if dataset.friends is not None and "friend_ids" in batch.column_names:
        sociable = dataset.user_ids[np.argsort(-np.diff(dataset.friends.indptr), kind="stable")]
        top_people = sociable[: config.k + 1].tolist()
        _write_lists(
            out / f"friends_top{config.k}.txt",
            dataset.user_ids,
            batch,
            "friend_ids",
            lambda user: [other for other in top_people if other != user][: config.k],
        )
    report = {
        "dataset": config.dataset,
        "config": asdict(config),
        "data": dataset.summary(),
        "served": {"model_version": _manifest_version(artifacts), "written_from": "batch_recommendations"},
        "places": _table(comparison.places),
        "friends": _table(comparison.friends),
        "place_model": place_model,
        "people_model": people_model,
        "stages_seconds": stages,
        "total_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "instance": str(run),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    write_text_atomically(out / "report.json", json.dumps(report, indent=2, default=float), mode=READABLE_BY_ALL)
    logger.info("benchmark %s done in %.0fs; files in %s", config.dataset, report["total_seconds"], out)
    return report


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _manifest_version(artifacts: Path) -> str:
    from recsys_core.manifest import ServingManifest, live_manifest_path

    return ServingManifest.read(live_manifest_path(artifacts)).model_version


def _table(frame: Any) -> list[dict[str, Any]]:
    """The comparison's rows for all users (the tiers stay in the Dagster asset)."""
    rows = frame[frame["tier"] == "all"] if "tier" in frame.columns else frame
    return json.loads(rows.to_json(orient="records"))


def _write_lists(
    path: Path, universe: np.ndarray, batch: pa.Table, column: str, fallback: Callable[[int], list[int]]
) -> None:
    """One line per user of `universe`: the batch's list, or `fallback(user)` for users the world does
    not hold (the most popular places, the most befriended people). Written beside and renamed over,
    so a reader never sees half a file."""
    lists = dict(zip(batch.column("user_id").to_pylist(), batch.column(column).to_pylist(), strict=True))
    lines = []
    for user in universe.tolist():
        chosen = lists.get(user)
        if chosen is None:
            chosen = fallback(user)
        lines.append(f"{user} " + " ".join(map(str, chosen)) + "\n")
    write_text_atomically(path, "".join(lines), prefix=f".{path.name}-", mode=READABLE_BY_ALL)
    logger.info("wrote %s (%d lines)", path, len(lines))
