"""Online metrics from events (CTR@k, conversion within the window, per user), the A/B decision,
and the experiment's assignment of users to arms."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from recsys_core.feedback.events import FeedbackEvent, LogRecord, events_table
from recsys_core.feedback.experiment import CANDIDATE, LIVE, Experiment, ExperimentError, bucket
from recsys_core.feedback.online import INCONCLUSIVE, KEEP, PROMOTE, OnlineSettings, decide, user_outcomes, wilson

T0 = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


def _table(events):
    return events_table([LogRecord(T0, events)])


def _shown(user, request, place, position, variant="a", at=T0):
    return FeedbackEvent("impression", user, at, request_id=request, variant=variant, place_id=place, position=position)


def test_clicks_and_visits_count_only_for_what_was_shown_in_the_top_k_and_within_the_window():
    events = [
        _shown(1, "r1", 10, 0),
        _shown(1, "r1", 11, 1),
        _shown(1, "r1", 12, 3),  # below k = 3: not counted, nor its click
        FeedbackEvent("click", 1, T0, request_id="r1", variant="a", place_id=10),
        FeedbackEvent("click", 1, T0, request_id="r1", variant="a", place_id=10),  # a double click is one
        FeedbackEvent("click", 1, T0, request_id="r1", variant="a", place_id=12),
        FeedbackEvent("click", 1, T0, request_id="other", variant="a", place_id=11),  # another response's
        FeedbackEvent("visit", 1, T0 + dt.timedelta(days=2), place_id=10),  # converts r1's place 10
        FeedbackEvent("visit", 1, T0 + dt.timedelta(days=9), place_id=11),  # too late
        FeedbackEvent("visit", 1, T0 - dt.timedelta(days=1), place_id=11),  # before it was shown
        _shown(2, "r2", 10, 0, variant="b"),
        FeedbackEvent("visit", 3, T0 + dt.timedelta(days=1), place_id=10),  # someone else's visit
    ]
    outcomes = user_outcomes(_table(events), OnlineSettings(k=3))
    rows = {(r.variant, r.user_id): (r.impressions, r.clicks, r.conversions) for r in outcomes.itertuples()}
    assert rows == {("a", 1): (2, 1, 1), ("b", 2): (1, 0, 0)}


def test_a_day_counts_its_own_impressions_with_later_days_outcomes():
    later = T0 + dt.timedelta(days=1)
    day_one = [_shown(1, "r1", 10, 0)]
    day_two = [_shown(1, "r2", 11, 0, at=later), FeedbackEvent("visit", 1, later, place_id=10)]
    outcomes = user_outcomes(_table(day_one + day_two), OnlineSettings(), impressions_from=_table(day_one))
    assert outcomes[["impressions", "conversions"]].to_numpy().tolist() == [[1, 1]]


def _arms(n_users: int, ctr_live: float, ctr_candidate: float, seed: int = 0):
    """Each user sees 10 places; clicks with the arm's rate (users' own rates vary around it)."""
    rng = np.random.default_rng(seed)
    events = []
    for user in range(n_users):
        variant, rate = ("cand", ctr_candidate) if user % 2 else ("live", ctr_live)
        own = np.clip(rate * rng.lognormal(0, 0.5), 0, 1)
        for position in range(10):
            request = f"r{user}"
            events.append(_shown(user, request, position, position, variant=variant))
            if rng.random() < own:
                events.append(FeedbackEvent("click", user, T0, request_id=request, variant=variant, place_id=position))
    return user_outcomes(_table(events), OnlineSettings())


def test_the_decision_promotes_a_better_candidate_keeps_a_worse_one_and_waits_on_a_tie():
    settings = OnlineSettings(min_impressions=1000, guardrail=None)
    better = decide(_arms(1200, 0.10, 0.14), "live", "cand", settings)
    assert better.decision == PROMOTE and better.comparisons[0].ci_low > 0, better.reason
    worse = decide(_arms(1200, 0.14, 0.10), "live", "cand", settings)
    assert worse.decision == KEEP and worse.comparisons[0].ci_high < 0, worse.reason
    same = decide(_arms(1200, 0.12, 0.12, seed=3), "live", "cand", settings)
    assert same.decision == INCONCLUSIVE and same.comparisons[0].ci_low < 0 < same.comparisons[0].ci_high
    few = decide(_arms(100, 0.05, 0.5), "live", "cand", settings)
    assert few.decision == INCONCLUSIVE and "too few impressions" in few.reason
    assert better.live.impressions == 6000 and better.candidate.users == 600


def test_wilson_interval_holds_the_rate_and_narrows_with_trials():
    low, high = wilson(30, 100, 0.95)
    assert low < 0.3 < high and low > 0.2 and high < 0.4
    assert wilson(300, 1000, 0.95)[1] - wilson(300, 1000, 0.95)[0] < high - low
    assert wilson(0, 0, 0.95) == (0.0, 1.0)


def test_assignment_is_stable_close_to_the_share_and_fresh_for_a_new_salt():
    experiment = Experiment("e1", "salt-1", 0.1)
    arms = [experiment.arm(u) for u in range(20_000)]
    share = arms.count(CANDIDATE) / len(arms)
    assert abs(share - 0.1) < 4 * np.sqrt(0.1 * 0.9 / 20_000)
    assert arms == [experiment.arm(u) for u in range(20_000)]  # the same user, the same arm
    other = Experiment("e2", "salt-2", 0.1)
    both = sum(a == CANDIDATE and other.arm(u) == CANDIDATE for u, a in enumerate(arms))
    assert both < 0.02 * 20_000  # independent: about 1 % in both, not 10 %
    off = Experiment("e1", "salt-1", 0.1, enabled=False)
    assert {off.arm(u) for u in range(1000)} == {LIVE}
    assert 0 <= bucket("s", 1) < 1 and bucket("s", 1) == bucket("s", 1)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"name": "x", "salt": "s", "candidate_share": 1.5}', "candidate_share must be between 0 and 1"),
        ('{"name": "bad name!", "salt": "s", "candidate_share": 0.1}', "name must be"),
        ('{"name": "x", "candidate_share": 0.1}', "salt"),
        ('{"name": "x", "salt": "s", "candidate_share": 0.1, "extra": 1}', "extra"),
        ("{not json", "malformed JSON"),
    ],
)
def test_an_unusable_experiment_file_is_an_error_naming_the_field(text, words):
    with pytest.raises(ExperimentError, match=words):
        Experiment.from_json(text)
