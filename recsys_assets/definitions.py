"""The Dagster code location: assets, checks and resources of the recommendation pipeline."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

from recsys_assets.defs import automation, checks, feedback, graph, model, serving, world
from recsys_assets.io_manager import ArtifactIOManager
from recsys_assets.resources import (
    FeedbackSettings,
    InboxSettings,
    ReleasePolicy,
    ServingSettings,
    TrainingSettings,
    WorldSource,
    recorded_settings,
)
from recsys_core.feedback.store import EVENTS_ENV

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ARTIFACT_ROOT = os.environ.get("RECSYS_ARTIFACTS", str(PROJECT_ROOT / "var" / "artifacts"))
INBOX = os.environ.get("RECSYS_INBOX", str(PROJECT_ROOT / "var" / "inbox"))
EVENTS = os.environ.get(EVENTS_ENV, str(PROJECT_ROOT / "var" / "events"))


def build_definitions(
    artifact_root: str = ARTIFACT_ROOT,
    world_source: WorldSource | None = None,
    training: TrainingSettings | None = None,
    serving_settings: ServingSettings | None = None,
    inbox_directory: str = INBOX,
    feedback_settings: FeedbackSettings | None = None,
    release: ReleasePolicy | None = None,
) -> Definitions:
    """Resources not given are those `recsys materialize` recorded for $DAGSTER_HOME, else the defaults.
    The release policy sets how the serving and feedback resources publish and promote unless those
    resources are given whole."""
    recorded = recorded_settings()
    release = release or recorded.release or ReleasePolicy()
    return Definitions(
        assets=load_assets_from_modules([world, graph, model, serving, feedback]),
        asset_checks=load_asset_checks_from_modules([checks]),
        jobs=[*automation.JOBS, *feedback.JOBS],
        schedules=automation.SCHEDULES,
        sensors=[*automation.SENSORS, *feedback.SENSORS],
        resources={
            "io_manager": ArtifactIOManager(root=artifact_root),
            "world": world_source or recorded.world or WorldSource(),
            "training": training or recorded.training or TrainingSettings(),
            "serving": serving_settings
            or ServingSettings(
                artifact_root=artifact_root, publish_as=release.publish_as, candidate_share=release.candidate_share
            ),
            "inbox_settings": InboxSettings(directory=inbox_directory),
            "feedback": feedback_settings or FeedbackSettings(events_root=EVENTS, auto_promote=release.auto_promote),
        },
    )


defs = build_definitions()
