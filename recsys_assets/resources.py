"""Resources: the world source (synthetic, or data from files or PostgreSQL), training settings, serving settings.

`recsys materialize` records the world source, training settings and release policy it ran with
beside the Dagster instance (`$DAGSTER_HOME/recsys_settings.json`); the code location that
`dagster dev` loads on that instance reads them back, so the daemon's runs (a nightly retrain, an
inbox ingest, a city refresh from the UI) continue the same world with the same settings, and
publish the way the operator chose, instead of the defaults.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any, Literal, cast

import pyarrow as pa
import pyarrow.compute as pc
from dagster import ConfigurableResource

from recsys_core import contracts, sources
from recsys_core.evaluation.protocol import MAX_TESTED_USERS
from recsys_core.evaluation.split import SplitPolicy
from recsys_core.feedback.online import OnlineSettings
from recsys_core.feedback.releases import DEFAULT_CANDIDATE_SHARE, ServingDirectory
from recsys_core.feedback.store import EventPaths
from recsys_core.manifest import live_manifest_path
from recsys_core.model.config import ModelConfig
from recsys_core.ranking.fit import PlaceModelSettings
from recsys_core.retrieval.index import EXACT_MAX_ROWS
from recsys_core.sources.world import CompletedWorld, completed_world
from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.interactions import generate_interactions
from recsys_core.synthetic.places import generate_places
from recsys_core.synthetic.social_graph import generate_friend_labels, generate_user_user_edges
from recsys_core.synthetic.users import generate_users
from recsys_core.training.config import PIPELINE_TRAIN_CONFIG, TrainConfig
from recsys_core.vocabulary import BUILTIN, Vocabulary

_MODEL = ModelConfig()


SourceKind = Literal["synthetic", "parquet", "lightgcn", "lastfm", "events", "postgres"]
# `--source` forms, for help and error texts.
SOURCE_KINDS = ("synthetic", "parquet:DIR", "lightgcn:DIR", "lastfm:DIR", "events:FILE", "postgres:DSN")


class WorldSource(ConfigurableResource):
    """Chooses the source of the world tables.

    kind="synthetic" (default) runs the seeded generator with the given size. Every other kind
    reads `location` (a directory, a file or a PostgreSQL DSN: `recsys_core.sources`) into a
    vocabulary and partial tables, `completion` fills in what the source did not give, and each
    city's rows are taken from the result. Either way the tables then go through the same checks.
    """

    kind: SourceKind = "synthetic"
    n_users: int = 10_000
    n_places: int = 10_000
    seed: int = 42
    world_version: str = "v2"  # the synthetic world: v2 (hidden tastes, friendships, time) or v1 (features only)
    start_date: str = ""  # the synthetic world's first day (YYYY-MM-DD; "": WorldConfig's)
    location: str = ""  # directory, file or DSN of a non-synthetic source
    directory: str = ""  # `location`'s name before there were other sources than Parquet directories

    @property
    def where(self) -> str:
        return self.location or self.directory

    def vocabulary(self) -> Vocabulary:
        """The world's vocabulary: the built-in one for the synthetic world, else the source's."""
        if self.kind == "synthetic":
            return BUILTIN
        if self.kind == "parquet":  # vocabulary.json alone: the tables need not be read for it
            return sources.read_parquet_vocabulary(Path(self.where))
        return self._world().vocabulary

    def world_config(self) -> WorldConfig:
        dates = {"start_date": self.start_date} if self.start_date else {}
        return WorldConfig.of_version(
            self.world_version, n_users=self.n_users, n_places=self.n_places, seed=self.seed, **dates
        ).validate()

    def _world(self) -> CompletedWorld:
        return completed_world(self.kind, self.where, self.seed)

    def _of_city(self, name: str, column: str, city_id: int) -> pa.Table:
        table = self._world().tables[name]
        return table.filter(pc.equal(table.column(column), pa.scalar(city_id, table.schema.field(column).type)))

    def _of_users(self, name: str, users: pa.Table, column: str) -> pa.Table:
        table = self._world().tables[name]
        return table.filter(pc.is_in(table.column(column), users.column("user_id")))

    def edges_are_friendships(self) -> bool:
        """Whether the social edges are declared friendships (given as bare pairs), not the synthetic
        world's similar-neighbour edges: people recommendations then leave out existing friends."""
        if self.kind == "synthetic":
            return self.world_config().edges_are_friendships
        edges = self._world().tables["user_user_edges"]
        return edges.num_rows > 0 and "interest_overlap_score" in contracts.filled_columns(edges)

    def users(self, city_id: int) -> pa.Table:
        if self.kind == "synthetic":
            return generate_users(self.world_config(), city_id)
        return self._of_city("users", "home_city_id", city_id)

    def places(self, city_id: int) -> pa.Table:
        if self.kind == "synthetic":
            return generate_places(self.world_config(), city_id)
        return self._of_city("places", "city_id", city_id)

    def interactions(self, city_id: int, users: pa.Table, places: pa.Table) -> pa.Table:
        if self.kind == "synthetic":
            return generate_interactions(self.world_config(), city_id, users, places)
        return self._of_users("interactions", users, "user_id")

    def user_user_edges(self, city_id: int, users: pa.Table, interactions: pa.Table) -> pa.Table:
        if self.kind == "synthetic":
            return generate_user_user_edges(self.world_config(), users, interactions)
        return self._of_users("user_user_edges", users, "user_u")

    def friend_labels(self, city_id: int, users: pa.Table, interactions: pa.Table, edges: pa.Table) -> pa.Table:
        if self.kind == "synthetic":
            return generate_friend_labels(self.world_config(), city_id, users, interactions, edges)
        return self._of_users("friend_labels", users, "user_u")


def world_source_from_spec(
    spec: str, n_users: int, n_places: int, seed: int, world_version: str = "v2", start_date: str = ""
) -> WorldSource:
    """`--source` as a WorldSource: "synthetic" (sized by the other options) or KIND:LOCATION."""
    kind, _, location = spec.partition(":")
    if kind == "synthetic" and not location:
        source = WorldSource(
            n_users=n_users, n_places=n_places, seed=seed, world_version=world_version, start_date=start_date
        )
        source.world_config()  # a bad size or version fails here, naming it
        return source
    if kind in sources.READERS and location:
        if start_date:
            raise ValueError(
                f"--start-date {start_date} sets the synthetic world's first day; --source {spec} has its own"
            )
        if kind == "postgres":
            return WorldSource(kind="postgres", location=location, seed=seed)
        path = Path(location).expanduser().resolve()
        wanted = sources.READERS[kind].expects
        if (wanted == "directory" and not path.is_dir()) or (wanted == "file" and not path.is_file()):
            raise FileNotFoundError(f"--source {spec}: {path} is not a {wanted}")
        return WorldSource(kind=cast(SourceKind, kind), location=str(path), seed=seed)
    raise ValueError(f"--source {spec!r} is not a world source; supported: {', '.join(SOURCE_KINDS)}")


class TrainingSettings(ConfigurableResource):
    """Model and training knobs exposed to the UI and to tests (small values make a fast run).

    Checkpoints: training saves its whole state (model, optimizer, step, best weights, RNG
    states, history) every `checkpoint_every` steps (0: at every evaluation) and when it stops,
    atomically, under `checkpoint_dir` (default: `<artifact root>/checkpoints`), one
    subdirectory per trained model (`graphrec`, `two_tower`). With `resume=True` a run
    continues from that checkpoint (e.g. after a killed retrain: set `resume: true` under
    `resources.training.config` in the launchpad); the step counter and history carry on.
    A checkpoint of another graph, split or configuration is ignored and training starts
    afresh, so leaving `resume` on is safe. `checkpoint_every=-1` turns checkpoints off.
    """

    # Training defaults are the pipeline's (PIPELINE_TRAIN_CONFIG says why they differ from TrainConfig's);
    # the model's are ModelConfig's.
    max_steps: int = PIPELINE_TRAIN_CONFIG.max_steps
    time_budget_s: float = PIPELINE_TRAIN_CONFIG.time_budget_s
    eval_every: int = PIPELINE_TRAIN_CONFIG.eval_every
    batch_size: int = PIPELINE_TRAIN_CONFIG.batch_size
    d_model: int = _MODEL.d_model
    n_layers: int = _MODEL.n_layers
    backbone: Literal["sage", "gat"] = _MODEL.backbone
    time_decay: bool = _MODEL.time_decay
    engagement_weighted: bool = PIPELINE_TRAIN_CONFIG.engagement_weighted
    seed: int = PIPELINE_TRAIN_CONFIG.seed
    oracle: bool = True  # compare with the generator's true preferences (synthetic worlds only)
    baseline_budget_s: float = 90.0  # per trained baseline (MF-BPR, LightGCN)
    # The place model around GraphRec (recsys_core.ranking): its iALS bag's seconds, and how many
    # users its choices are measured on.
    ials_budget_s: float = PlaceModelSettings.ials_budget_s
    place_eval_users: int = PlaceModelSettings.eval_users
    evaluation_users: int = MAX_TESTED_USERS  # per held-out part in `model_evaluation` (a seeded sample)
    # The held-out parts: "time" (the last held_out_days, and the window before for validation),
    # "random" (a share of each user's pairs) or "auto" (by time where the data's dates span it).
    split: Literal["auto", "time", "random"] = "auto"
    held_out_days: float = 14.0
    # A retrain that new data started (`retrain_after_ingest` tags it RETRAIN_MODE_TAG=refresh) continues the
    # served GraphRec for `refresh_steps` steps, and the evaluation's two-tower from its last weights, where
    # the served model's configuration and a time split allow (`training.warm_start`); the nightly and manual
    # retrains train from scratch. warm_start=False: every retrain from scratch.
    warm_start: bool = True
    refresh_steps: int = 30
    checkpoint_dir: str = ""  # "": <artifact root>/checkpoints (TrainConfig's "" means nowhere)
    # steps between checkpoints; 0: at every evaluation; -1 (this setting only): no checkpoints
    checkpoint_every: int = PIPELINE_TRAIN_CONFIG.checkpoint_every
    resume: bool = PIPELINE_TRAIN_CONFIG.resume  # continue from the last checkpoint when it fits this run

    def graphrec_config(
        self, vocabulary: Vocabulary, n_users: int = 0, n_places: int = 0, **overrides: Any
    ) -> ModelConfig:
        """The model config for a graph of `vocabulary` with these settings: its widths follow the
        vocabulary, and a world whose places carry no content gets id embeddings for its
        `n_users` and `n_places` (`ModelConfig.for_world`)."""
        settings = dict(
            d_model=self.d_model, n_layers=self.n_layers, backbone=self.backbone, time_decay=self.time_decay
        )
        return ModelConfig.for_world(vocabulary, n_users, n_places, **{**settings, **overrides})

    def split_policy(self) -> SplitPolicy:
        return SplitPolicy(mode=self.split, held_out_days=self.held_out_days, seed=self.seed)

    def place_model_settings(self) -> PlaceModelSettings:
        return PlaceModelSettings(seed=self.seed, eval_users=self.place_eval_users, ials_budget_s=self.ials_budget_s)

    def train_config(
        self, name: str = "graphrec", artifact_root: str | Path | None = None, refresh: bool = False
    ) -> TrainConfig:
        """The trainer's config; checkpoints of model `name` go to `<checkpoint_dir or
        artifact_root/checkpoints>/<name>` (nowhere when neither is known or they are off).
        `refresh`: the steps of a warm-started retrain (`refresh_steps`, evaluated three times)."""
        root = self.checkpoint_dir or (Path(artifact_root) / "checkpoints" if artifact_root else "")
        directory = str(Path(root) / name) if root and self.checkpoint_every >= 0 else ""
        steps = min(self.max_steps, self.refresh_steps) if refresh else self.max_steps
        return dataclasses.replace(
            PIPELINE_TRAIN_CONFIG,
            max_steps=steps,
            time_budget_s=self.time_budget_s,
            eval_every=min(self.eval_every, max(steps // 3, 1)) if refresh else self.eval_every,
            batch_size=self.batch_size,
            engagement_weighted=self.engagement_weighted,
            seed=self.seed,
            checkpoint_dir=directory,
            checkpoint_every=max(self.checkpoint_every, 0),
            resume=self.resume and bool(directory),
        )


@dataclasses.dataclass(frozen=True)
class ReleasePolicy:
    """How a newly built model reaches users: straight to live, or as an A/B candidate beside live
    that a `promote` decision of `online_metrics` makes live by itself when `auto_promote` is on.
    With nothing live yet, a candidate is published live (there is nothing to compare it with)."""

    publish_as: Literal["live", "candidate"] = "live"
    candidate_share: float = DEFAULT_CANDIDATE_SHARE  # of users an experiment sends to the candidate
    auto_promote: bool = False

    def __post_init__(self) -> None:
        if self.publish_as not in ("live", "candidate"):
            raise ValueError(f"publish_as must be 'live' or 'candidate', got {self.publish_as!r}")
        if not 0 < self.candidate_share < 1:
            raise ValueError(f"candidate_share must be between 0 and 1 (exclusive), got {self.candidate_share!r}")


_RELEASE = ReleasePolicy()


class ServingSettings(ConfigurableResource):
    """How serving artifacts are built and where the live manifest is published."""

    artifact_root: str
    exact_max_rows: int = EXACT_MAX_ROWS  # larger cities get an HNSW index
    ann_recall_sample: int = 200  # queries the recall check draws per city
    batch_top_k: int = 20  # places per user in `batch_recommendations`
    # True for data with explicit friendships; a world source whose edges are bare pairs says so itself
    social_edges_are_friendships: bool = False
    # live: a new manifest replaces the live one; candidate: it is A/B tested against live first
    publish_as: Literal["live", "candidate"] = _RELEASE.publish_as
    candidate_share: float = _RELEASE.candidate_share  # of users an experiment sends to the candidate

    def live_manifest_path(self) -> Path:
        return live_manifest_path(self.artifact_root)

    def releases(self) -> ServingDirectory:
        """The live and candidate manifests, the experiment, the pin and the published history."""
        return ServingDirectory(self.live_manifest_path().parent)


class FeedbackSettings(ConfigurableResource):
    """Where the service's feedback events are (`RECSYS_EVENTS`), how online metrics count them, and
    whether a `promote` decision makes the candidate live by itself."""

    events_root: str
    k: int = OnlineSettings.k
    window_days: int = OnlineSettings.window.days
    confidence: float = OnlineSettings.confidence
    min_impressions: int = OnlineSettings.min_impressions
    auto_promote: bool = _RELEASE.auto_promote
    keep_versions: int = 10  # published manifests kept in the history (live, candidate, pinned always)
    keep_runs: int = 3  # artifact runs kept per asset partition beyond those a kept manifest names

    def paths(self) -> EventPaths:
        return EventPaths(Path(self.events_root))

    def online(self) -> OnlineSettings:
        return OnlineSettings(
            k=self.k,
            window=dt.timedelta(days=self.window_days),
            confidence=self.confidence,
            min_impressions=self.min_impressions,
        )


class InboxSettings(ConfigurableResource):
    """Where new interaction files are dropped: `<directory>/<city slug>/*.parquet|*.csv`."""

    directory: str


SETTINGS_FILE = "recsys_settings.json"


def settings_path(home: str | Path | None = None) -> Path | None:
    """Where the settings of the instance at `home` (default: $DAGSTER_HOME) are recorded."""
    home = home or os.environ.get("DAGSTER_HOME")
    return Path(home) / SETTINGS_FILE if home else None


def _fields(resource: ConfigurableResource) -> dict[str, object]:
    return {name: getattr(resource, name) for name in type(resource).model_fields}


@dataclasses.dataclass(frozen=True)
class RecordedSettings:
    """What `recsys materialize` ran an instance with; None where nothing is recorded."""

    world: WorldSource | None = None
    training: TrainingSettings | None = None
    release: ReleasePolicy | None = None


def record_settings(
    world: WorldSource, training: TrainingSettings, home: str | Path | None = None, release: ReleasePolicy = _RELEASE
) -> Path:
    """Write the world source, training settings and release policy an instance was materialized with."""
    path = settings_path(home)
    if path is None:
        raise ValueError("DAGSTER_HOME is not set: nowhere to record the settings")
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"world": _fields(world), "training": _fields(training), "release": dataclasses.asdict(release)}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def recorded_settings(home: str | Path | None = None) -> RecordedSettings:
    """The recorded settings of the instance at `home`; all None if nothing is recorded. A record
    from before release policies were recorded has none (the defaults apply)."""
    path = settings_path(home)
    if path is None or not path.exists():
        return RecordedSettings()
    try:
        raw = json.loads(path.read_text())
        release = ReleasePolicy(**raw["release"]) if "release" in raw else None
        return RecordedSettings(WorldSource(**raw["world"]), TrainingSettings(**raw["training"]), release)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{path} is not a valid settings record ({exc}); delete it or run `recsys materialize`"
        ) from exc
