"""The trained GraphRec checkpoint and its evaluation against baselines and the oracle."""

import dataclasses
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
from dagster import AllPartitionMapping, AssetExecutionContext, AssetIn, AssetKey, MetadataValue, Output, asset

from recsys_assets.io_manager import latest_artifact_path
from recsys_assets.metadata import plain_metadata, png_markdown
from recsys_assets.resources import ServingSettings, TrainingSettings, WorldSource
from recsys_assets.stages import is_refresh
from recsys_core.evaluation.compare import PLACE_MODEL, Comparison, WorldTruth, compare, summary_markdown
from recsys_core.graph import GraphBundle
from recsys_core.model.config import ModelConfig
from recsys_core.training.pipeline import TrainedModel, describe, fit, fit_served_model, train_config_for
from recsys_core.training.warm_start import WarmStart, refresh_start

MODEL: dict[str, Any] = dict(group_name="model", kinds={"pytorch"}, owners=["team:ml"])
ALL_CITIES = AllPartitionMapping()


def _last_baseline(context: AssetExecutionContext, name: str) -> tuple[Path, str]:
    """The checkpoint of baseline `name` in the latest `model_evaluation`."""
    directory = Comparison.baseline_directory(
        latest_artifact_path(context.instance, AssetKey("model_evaluation"), None), name
    )
    return directory, f"the last evaluation's {name}"


def _curve_png(trained: TrainedModel) -> MetadataValue:
    """Training loss and validation Recall@20 per step, as an inline image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = trained.history
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(history["step"], history["loss"], label="training loss", color="tab:blue")  # no loss at a warm step 0
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if "val_recall@20" in history:
        val = history.dropna(subset=["val_recall@20"])
        ax2 = ax.twinx()
        ax2.plot(val["step"], val["val_recall@20"], "o-", color="tab:orange", label="val Recall@20")
        ax2.set_ylabel("val Recall@20")
    ax.set_title(f"best step {trained.best_step}: val Recall@20 {trained.best_val_recall:.4f}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return png_markdown(buffer.getvalue(), "training curve")


def _warm_start(
    context: AssetExecutionContext,
    training: TrainingSettings,
    model_config: ModelConfig,
    graph: GraphBundle,
    saved: Callable[[], tuple[Path, str]],
) -> tuple[WarmStart | None, str]:
    """In a refresh retrain (and with warm starts on), the weights `saved()` names (a directory and
    what to call it) as a warm start, else None; and what happened, for the run's metadata."""
    if not is_refresh(context.run.tags):
        return None, ""
    if not training.warm_start:
        return None, "not used: warm starts are off (TrainingSettings.warm_start)"
    try:
        directory, source = saved()
    except FileNotFoundError as exc:
        return None, f"not used: {exc}"
    warm, reason = refresh_start(directory, model_config, graph, training.split_policy(), source)
    if warm is None:
        context.log.warning("refresh retrain trains from scratch: %s", reason)
        return None, f"not used: {reason}"
    return warm, reason


def _served_model(serving: ServingSettings) -> tuple[Path, str]:
    live = serving.releases().read("live")
    if live is None:
        raise FileNotFoundError("nothing is served yet")
    return Path(live.model.directory), f"served version {live.version}"


@asset(
    **MODEL,
    description="The place model: GraphRec trained multi-task on the graph with held-out val/test parts "
    "(best-by-validation weights; checkpointed while it trains, `resume: true` in the training resource continues "
    "a killed run), the graph filter and an iALS bag, blended with weights chosen on validation, then refit on "
    "every pair for serving. A retrain that new data started continues the served GraphRec for "
    "`refresh_steps` steps (metadata `warm_start` says from what, or why it trained from scratch).",
)
def trained_model(
    context: AssetExecutionContext, hetero_graph: GraphBundle, training: TrainingSettings, serving: ServingSettings
) -> Output[TrainedModel]:
    model_config = training.graphrec_config(hetero_graph.vocabulary, **hetero_graph.node_counts())
    warm, how = _warm_start(context, training, model_config, hetero_graph, lambda: _served_model(serving))
    settings = training.train_config("graphrec", serving.artifact_root, refresh=warm is not None)
    config = train_config_for(model_config, settings, hetero_graph)
    trained = fit_served_model(
        hetero_graph,
        model_config,
        config,
        training.place_model_settings(),
        split_seed=training.seed,
        split_policy=training.split_policy(),
        warm_start=warm,
    )
    trained.warm_start = trained.warm_start or how
    info = describe(trained)
    plain = plain_metadata(info)
    place = trained.place_model
    return Output(
        trained,
        metadata={
            "best_val_recall@20": plain["best_val_recall@20"],
            "best_step": plain["best_step"],
            "train_seconds": plain["train_seconds"],
            "stopped_because": plain["stopped_because"],
            "resumed_from_step": plain["resumed_from_step"],
            "warm_start": trained.warm_start or "no: trained from scratch",
            "steps": plain["steps"],
            "parameters": plain["parameters"],
            "val_pairs": len(trained.split.val_edges),
            "test_pairs": len(trained.split.test_edges),
            "place_model_weights": MetadataValue.json(place.weights if place else {}),
            "place_model_validation": MetadataValue.json(place.results("validation") if place else {}),
            "summary": MetadataValue.json(info),
            "training_curve": _curve_png(trained),
        },
    )


@asset(
    **MODEL,
    ins={
        "users": AssetIn(partition_mapping=ALL_CITIES),
        "places": AssetIn(partition_mapping=ALL_CITIES),
        "interactions": AssetIn(partition_mapping=ALL_CITIES),
    },
    description="GraphRec vs a feature two-tower (0 layers), popularity, MF-BPR, LightGCN (each trained baseline "
    "within the baseline budget), an item-item filter and the "
    "generator's oracle on the same split (validation and test), by engagement tier; friends vs link heuristics.",
)
def model_evaluation(
    context: AssetExecutionContext,
    trained_model: TrainedModel,
    hetero_graph: GraphBundle,
    users: pa.Table,
    places: pa.Table,
    interactions: pa.Table,
    training: TrainingSettings,
    serving: ServingSettings,
    world: WorldSource,
) -> Output[Comparison]:
    tower_config = training.graphrec_config(hetero_graph.vocabulary, **hetero_graph.node_counts(), n_layers=0)
    # A trained baseline: within the baseline budget, as MF-BPR and LightGCN are; a refresh continues the
    # last evaluation's two-tower, as the place model continues the served GraphRec.
    warm, how = _warm_start(context, training, tower_config, hetero_graph, lambda: _last_baseline(context, "two_tower"))
    tower_budget = dataclasses.replace(
        training.train_config("two_tower", serving.artifact_root, refresh=warm is not None),
        time_budget_s=training.baseline_budget_s,
    )
    tower_training = train_config_for(tower_config, tower_budget, hetero_graph)
    tower_fit = fit(hetero_graph, tower_config, tower_training, split=trained_model.split, warm_start=warm)
    two_tower = tower_fit.model
    # The oracle is the generator's own preferences: a world from any other source has none.
    truth = None
    if training.oracle and world.kind == "synthetic":
        config, policy = world.world_config(), training.split_policy()
        # A time split's oracle scores the test window's tastes and open places (its middle day).
        timed = policy.resolved_mode(hetero_graph) == "time"
        day = config.weeks * 7 - policy.held_out_days / 2 if timed else None
        truth = WorldTruth(users, places, interactions, config=config, day=day)
    comparison = compare(
        hetero_graph,
        trained_model.split,
        {"graphrec": trained_model.model, "two_tower": two_tower},
        world=truth,
        seed=training.seed,
        baseline_budget_s=training.baseline_budget_s,
        place_models={PLACE_MODEL: trained_model.place_model.selected} if trained_model.place_model else None,
        max_users=training.evaluation_users,
        # On friendship data the people model's order is what `/recommend/people` serves: measure it.
        people_report=trained_model.people_model.report
        if trained_model.people_model is not None and world.edges_are_friendships()
        else None,
    )
    headline = {f"test {m} recall@20": comparison.place_metric("test", m) for m in comparison.places["model"].unique()}
    if trained_model.place_model is not None:
        headline |= {
            f"{part} place model {label} recall@20": values["recall@20"]
            for part in ("validation", "test")
            for label, values in trained_model.place_model.results(part).items()
        }
    headline["test graphrec friend compat ROC-AUC"] = comparison.friend_metric("test", "graphrec")
    comparison.baseline_models["two_tower"] = two_tower
    return Output(
        comparison,
        metadata={
            **{k: round(v, 4) for k, v in headline.items()},
            "test comparison": MetadataValue.md(summary_markdown(comparison, "test")),
            "validation comparison": MetadataValue.md(summary_markdown(comparison, "val")),
            "seconds": MetadataValue.json(comparison.seconds),
            "two_tower_warm_start": tower_fit.warm_start or how or "no: trained from scratch",
        },
    )
