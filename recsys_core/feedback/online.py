"""Online metrics of served versions from feedback events, and the A/B decision between two.

What an impression led to, per (surface, variant, user):
- `impressions`: items shown at a position below `k`;
- `clicks`: of those, the ones the user clicked (a click event of the same response and item);
- `conversions`: of those, the ones followed within `window` by the real thing: a visit to the
  place (places surface) or a join with the person (people surface).
So CTR@k = clicks / impressions and conversion = conversions / impressions, each over all the
arm's impressions.

Users, not impressions, are the unit the experiment randomizes, and one user's impressions are
not independent; so the difference between two arms gets a Poisson bootstrap over users (each
replicate reweights whole users), and each arm's own rate a Wilson interval for display.

Decision, on the primary metric (places CTR@k by default), once both arms have `min_impressions`:
`promote` when the whole interval of candidate - live is above 0 and the guardrail metric
(conversion) is not significantly worse; `keep` when the whole interval is below 0 (or the
guardrail is significantly worse); `inconclusive` otherwise. The interval is 99% by default:
the decision is looked at every day of an experiment, and every look is a chance for a false win.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

PLACES, PEOPLE = "places", "people"
PROMOTE, KEEP, INCONCLUSIVE = "promote", "keep", "inconclusive"
Metric = Literal["ctr", "conversion"]
OUTCOME_COLUMNS = ["surface", "variant", "user_id", "impressions", "clicks", "conversions"]


@dataclass(frozen=True)
class OnlineSettings:
    k: int = 10  # positions counted as shown (CTR@k)
    window: dt.timedelta = dt.timedelta(days=7)  # a visit this long after an impression converts it
    primary: Metric = "ctr"
    guardrail: Metric | None = "conversion"
    confidence: float = 0.99
    min_impressions: int = 2000  # per arm, before anything but `inconclusive`
    bootstrap: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1 or self.min_impressions < 0 or self.bootstrap < 100 or not 0.5 < self.confidence < 1:
            raise ValueError(f"online metric settings out of range: {self}")


def _frame(events: pa.Table) -> pd.DataFrame:
    frame = events.select(
        ["type", "user_id", "timestamp", "request_id", "variant", "place_id", "other_user_id", "position"]
    ).to_pandas()
    frame["surface"] = np.where(frame["place_id"].notna(), PLACES, PEOPLE)
    frame["item"] = frame["place_id"].fillna(frame["other_user_id"]).astype("Int64")
    return frame


def user_outcomes(events: pa.Table, settings: OnlineSettings, impressions_from: pa.Table | None = None) -> pd.DataFrame:
    """Per (surface, variant, user): impressions below position k, their clicks and conversions.

    `impressions_from`: count only these events' impressions (one day's), with clicks and
    conversions looked up in `events` (that day and the window after it); None: all of `events`."""
    frame = _frame(events)
    shown = _frame(impressions_from) if impressions_from is not None else frame
    shown = shown[(shown["type"] == "impression") & (shown["position"] < settings.k)]
    shown = shown.drop_duplicates(["request_id", "surface", "item"])[
        ["surface", "variant", "user_id", "request_id", "item", "timestamp"]
    ]
    if shown.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype="int64" if c not in ("surface", "variant") else "object") for c in OUTCOME_COLUMNS}
        )
    clicks = frame.loc[frame["type"] == "click", ["request_id", "surface", "item"]].drop_duplicates()
    clicks["clicked"] = 1
    shown = shown.merge(clicks, on=["request_id", "surface", "item"], how="left")
    done = frame[((frame["type"] == "visit") & (frame["surface"] == PLACES)) | (frame["type"] == "join")]
    done = done.assign(
        surface=np.where(done["type"] == "visit", PLACES, PEOPLE),
        item=done["item"].where(done["type"] == "visit", done["other_user_id"].astype("Int64")),
    )
    pairs = shown.reset_index(names="shown").merge(
        done[["surface", "user_id", "item", "timestamp"]].rename(columns={"timestamp": "done_at"}),
        on=["surface", "user_id", "item"],
    )
    after = pairs[(pairs["done_at"] >= pairs["timestamp"]) & (pairs["done_at"] <= pairs["timestamp"] + settings.window)]
    shown["converted"] = shown.index.isin(after["shown"].unique()).astype("int64")
    shown["clicked"] = shown["clicked"].fillna(0).astype("int64")
    grouped = shown.groupby(["surface", "variant", "user_id"], as_index=False).agg(
        impressions=("item", "size"), clicks=("clicked", "sum"), conversions=("converted", "sum")
    )
    return grouped[OUTCOME_COLUMNS]


def wilson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a rate (0, 1 when there are no trials)."""
    if trials == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


@dataclass(frozen=True)
class ArmMetrics:
    variant: str
    users: int
    impressions: int
    clicks: int
    conversions: int
    ctr: float
    ctr_ci: tuple[float, float]
    conversion: float
    conversion_ci: tuple[float, float]
    coverage: int  # distinct items shown


@dataclass(frozen=True)
class Comparison:
    metric: str
    live: float
    candidate: float
    difference: float  # candidate - live
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Decision:
    decision: str
    reason: str
    surface: str
    live: ArmMetrics | None
    candidate: ArmMetrics | None
    comparisons: list[Comparison] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def arm_metrics(outcomes: pd.DataFrame, variant: str, coverage: int, confidence: float) -> ArmMetrics:
    rows = outcomes[outcomes["variant"] == variant]
    impressions, clicks, conversions = (int(rows[c].sum()) for c in ("impressions", "clicks", "conversions"))
    return ArmMetrics(
        variant=variant,
        users=int(rows["user_id"].nunique()),
        impressions=impressions,
        clicks=clicks,
        conversions=conversions,
        ctr=clicks / impressions if impressions else 0.0,
        ctr_ci=wilson(clicks, impressions, confidence),
        conversion=conversions / impressions if impressions else 0.0,
        conversion_ci=wilson(conversions, impressions, confidence),
        coverage=coverage,
    )


def _bootstrap_difference(
    live: pd.DataFrame, candidate: pd.DataFrame, numerator: str, settings: OnlineSettings
) -> tuple[float, float, float]:
    """candidate - live of sum(numerator) / sum(impressions), and its bootstrap interval over users."""
    rng = np.random.default_rng(settings.seed)

    def replicates(rows: pd.DataFrame) -> NDArray[np.float64]:
        weights = rng.poisson(1.0, size=(settings.bootstrap, len(rows))).astype(np.float64)
        hits: NDArray[np.float64] = weights @ rows[numerator].to_numpy(np.float64)
        shown: NDArray[np.float64] = weights @ rows["impressions"].to_numpy(np.float64)
        return hits / np.maximum(shown, 1.0)

    point = candidate[numerator].sum() / max(candidate["impressions"].sum(), 1) - live[numerator].sum() / max(
        live["impressions"].sum(), 1
    )
    differences = replicates(candidate) - replicates(live)
    tail = (1 - settings.confidence) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return float(point), float(low), float(high)


NUMERATOR = {"ctr": "clicks", "conversion": "conversions"}


def decide(
    outcomes: pd.DataFrame,
    live_variant: str,
    candidate_variant: str,
    settings: OnlineSettings,
    coverage: dict[str, int] | None = None,
    surface: str = PLACES,
) -> Decision:
    """The A/B decision between two variants from their users' outcomes (summed over days)."""
    outcomes = outcomes[outcomes["surface"] == surface]
    outcomes = outcomes.groupby(["variant", "user_id"], as_index=False)[["impressions", "clicks", "conversions"]].sum()
    coverage = coverage or {}
    live = arm_metrics(outcomes, live_variant, coverage.get(live_variant, 0), settings.confidence)
    candidate = arm_metrics(outcomes, candidate_variant, coverage.get(candidate_variant, 0), settings.confidence)
    if min(live.impressions, candidate.impressions) < settings.min_impressions:
        return Decision(
            INCONCLUSIVE,
            f"too few impressions yet: live {live.impressions}, candidate {candidate.impressions} "
            f"(each needs {settings.min_impressions})",
            surface,
            live,
            candidate,
        )
    rows = {v: outcomes[outcomes["variant"] == v] for v in (live_variant, candidate_variant)}
    comparisons = []
    for metric in dict.fromkeys([settings.primary, *([settings.guardrail] if settings.guardrail else [])]):
        point, low, high = _bootstrap_difference(
            rows[live_variant], rows[candidate_variant], NUMERATOR[metric], settings
        )
        comparisons.append(Comparison(metric, getattr(live, metric), getattr(candidate, metric), point, low, high))
    primary = comparisons[0]
    guardrail = comparisons[1] if len(comparisons) > 1 else None
    level = f"{settings.confidence:.0%}"
    span = (
        f"{primary.metric} {primary.difference:+.4f} ({level} interval {primary.ci_low:+.4f} .. {primary.ci_high:+.4f})"
    )
    if guardrail is not None and guardrail.ci_high < 0:
        return Decision(
            KEEP,
            f"{guardrail.metric} is worse: {guardrail.difference:+.4f} "
            f"({level} interval up to {guardrail.ci_high:+.4f}); {span}",
            surface,
            live,
            candidate,
            comparisons,
        )
    if primary.ci_low > 0:
        return Decision(PROMOTE, f"candidate better: {span}", surface, live, candidate, comparisons)
    if primary.ci_high < 0:
        return Decision(KEEP, f"candidate worse: {span}", surface, live, candidate, comparisons)
    return Decision(INCONCLUSIVE, f"no difference shown: {span}", surface, live, candidate, comparisons)


def shown_coverage(events: pa.Table, settings: OnlineSettings) -> dict[str, int]:
    """Per variant: the distinct places shown in the top k."""
    frame = events.select(["type", "variant", "place_id", "position"]).to_pandas()
    shown = frame[(frame["type"] == "impression") & (frame["position"] < settings.k) & frame["place_id"].notna()]
    return {str(k): int(v) for k, v in shown.groupby("variant")["place_id"].nunique().items()}


def experiment_decision(
    events: pa.Table,
    live_variant: str,
    candidate_variant: str,
    settings: OnlineSettings,
    until: dt.datetime,
    since: dt.datetime | None = None,
) -> Decision:
    """The decision as of `until`: the impressions from `since` (the experiment's start) to `until`,
    with their clicks and conversions looked up in all of `events` from `since` on."""
    stamp = events.schema.field("timestamp").type
    if since is not None:
        events = events.filter(pc.greater_equal(events.column("timestamp"), pa.scalar(since, stamp)))
    shown = events.filter(pc.less(events.column("timestamp"), pa.scalar(until, stamp)))
    outcomes = user_outcomes(events, settings, impressions_from=shown)
    return decide(outcomes, live_variant, candidate_variant, settings, shown_coverage(shown, settings))
