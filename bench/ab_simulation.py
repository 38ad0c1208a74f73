"""Benchmark: the loop, simulated end to end. Does an A/B test pick the truly better version?

On a small world v2, three GraphRec versions are trained and published like any other (`retrieval.
publish`): `live` (a short training run), `better` (a long one) and `worse` (untrained). Each
scenario serves live and one candidate side by side through the real service (in process: routing
by the experiment's hash, request ids and variants in the responses, POST /events into the durable
log, rolled into Parquet), and simulated users react to what they were shown: a user is active on a
day with probability `--active`, asks for 10 places in their city, and clicks and visits by
`bench.click_model` (position and the generator's true preference).
Then the online metrics (`recsys_core.feedback.online`, the code the `online_metrics` asset runs) are
computed as of each simulated day, and the benchmark reports each scenario's final decision, the
day and the number of events when the decision was first reached and stayed, and each version's
expected CTR under the click model (what "truly better" means here, free of click noise).

Scenarios: `better` (should end `promote`), `worse` (`keep`), `copy` (live republished under a new
version, should stay `inconclusive`).

    python -m bench --only ab                       (or: python -m bench.ab_simulation --users 1500)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from litestar.testing import TestClient

from bench import click_model
from bench.click_model import K, Users
from recsys_core.evaluation.split import SplitPolicy, training_graph
from recsys_core.feedback.online import OnlineSettings, experiment_decision
from recsys_core.feedback.releases import ServingDirectory
from recsys_core.feedback.store import EventPaths, read_events, roll_segments, stored_days
from recsys_core.graph import build_from_world
from recsys_core.manifest import ServingManifest, live_manifest_path
from recsys_core.model.config import ModelConfig
from recsys_core.model.graphrec import GraphRec
from recsys_core.model.inputs import GraphInputs
from recsys_core.retrieval.publish import publish
from recsys_core.synthetic.config import WorldConfig
from recsys_core.synthetic.world import generate_world
from recsys_core.training.config import TrainConfig
from recsys_core.training.pipeline import fit
from serving.app import create_app

log = logging.getLogger("bench.ab")


def train_versions(world: dict[str, Any], root: Path, live_steps: int, better_steps: int) -> dict[str, ServingManifest]:
    bundle = build_from_world(world)
    split = SplitPolicy().apply(bundle)
    config = ModelConfig.for_world(bundle.vocabulary, **bundle.node_counts())
    manifests = {}
    for name, steps in (("live", live_steps), ("better", better_steps), ("worse", 0)):
        started = time.perf_counter()
        if steps:
            train = TrainConfig(max_steps=steps, time_budget_s=3600.0, eval_every=max(steps // 4, 5), batch_size=8192)
            model = fit(bundle, config, train, split=split).model
        else:
            torch.manual_seed(0)
            inputs = GraphInputs.from_hetero(training_graph(bundle, split), config.use_social, config.time_decay)
            model = GraphRec(config, inputs.edge_dims()).eval()
        publish(model, bundle, root / name, version=f"sim-{name}")
        manifests[name] = ServingManifest.read(live_manifest_path(root / name))
        log.info("version %s: %d training steps, %.0f s", name, steps, time.perf_counter() - started)
    return manifests


def simulate(
    scenario: str,
    live: ServingManifest,
    candidate: ServingManifest,
    users: Users,
    work: Path,
    days: int,
    active: float,
    seed: int,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    releases = ServingDirectory(work / scenario / "serving")
    releases.publish(live)
    releases.publish(candidate, "candidate", candidate_share=0.5)
    events = EventPaths(work / scenario / "events")
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    start = end - dt.timedelta(days=days)
    expected: dict[str, list[float]] = {}
    requests = 0
    started = time.perf_counter()
    with TestClient(app=create_app(releases.live, poll_interval_s=3600, events_root=events.root)) as client:
        for day in range(days):
            batch: list[dict[str, Any]] = []
            at = start + dt.timedelta(days=day)
            for user in np.flatnonzero(rng.random(len(users.user_ids)) < active):
                user_id = int(users.user_ids[user])
                stamp = at + dt.timedelta(seconds=int(rng.integers(0, 20 * 3600)))
                body = client.get("/recommend/places", params={"user_id": user_id, "top_k": K}).json()
                requests += 1
                reactions, expected_ctr = users.react(int(user), body, stamp, end, rng)
                if expected_ctr is not None:
                    expected.setdefault(body["variant"], []).append(expected_ctr)
                batch += reactions
            for i in range(0, len(batch), 1000):
                response = client.post("/events", json={"events": batch[i : i + 1000]})
                if response.status_code != 200:
                    raise RuntimeError(f"POST /events answered {response.status_code}: {response.text}")
            log.info(
                "%s: day %d, %d events, %.0f requests/s",
                scenario,
                day + 1,
                len(batch),
                requests / (time.perf_counter() - started),
            )
    roll_segments(events)
    stored = read_events(events.store, stored_days(events.store))
    return {
        "stored": stored,
        "start": start,
        "expected_ctr": {v: round(float(np.mean(x)), 5) for v, x in expected.items()},
        "requests": requests,
        "seconds": round(time.perf_counter() - started, 1),
    }


def decisions_by_day(
    run: dict[str, Any], live: str, candidate: str, days: int, settings: OnlineSettings
) -> list[dict[str, Any]]:
    """The decision as of the end of each simulated day (what the daily asset would have said)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    stored: pa.Table = run["stored"]
    stamp = stored.schema.field("timestamp").type
    out = []
    for day in range(1, days + 1):
        cut = run["start"] + dt.timedelta(days=day)
        shown = stored.filter(pc.less(stored.column("timestamp"), pa.scalar(cut, stamp)))
        impressions = shown.filter(pc.equal(shown.column("type"), pa.scalar("impression")))
        decision = experiment_decision(stored, live, candidate, settings, until=cut)
        out.append(
            {
                "day": day,
                "decision": decision.decision,
                "events": shown.num_rows,
                "impressions": impressions.num_rows,
                "ctr_difference": decision.comparisons[0].difference if decision.comparisons else None,
                "interval": [decision.comparisons[0].ci_low, decision.comparisons[0].ci_high]
                if decision.comparisons
                else None,
            }
        )
    return out


def settled(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first day from which the decision never changed again."""
    final = history[-1]["decision"]
    first = len(history) - 1
    while first > 0 and history[first - 1]["decision"] == final:
        first -= 1
    return history[first]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--active", type=float, default=0.5, help="share of users active on a day")
    parser.add_argument("--live-steps", type=int, default=5, help="training steps of the live version")
    parser.add_argument("--better-steps", type=int, default=100, help="... of the truly better candidate")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per simulated request otherwise
    torch.set_num_threads(2)
    config = WorldConfig(n_users=args.users, n_places=args.users, seed=args.seed)
    world = generate_world(config)
    users = Users(config, world)
    settings = OnlineSettings(k=K)
    figures: dict[str, Any] = {
        "world": {"users": args.users, "places": args.users, "version": "v2"},
        "click_model": click_model.DESCRIPTION,
        "days": args.days,
        "active_share": args.active,
        "candidate_share": 0.5,
        "decision_rule": {
            "metric": f"CTR@{K}",
            "confidence": settings.confidence,
            "min_impressions": settings.min_impressions,
        },
        "scenarios": {},
    }
    with tempfile.TemporaryDirectory(prefix="recsys-ab-") as tmp:
        work = Path(tmp)
        manifests = train_versions(world, work / "versions", args.live_steps, args.better_steps)
        live = manifests["live"]
        candidates = {
            "better": manifests["better"],
            "worse": manifests["worse"],
            "copy": dataclasses.replace(live, version="sim-live-copy"),
        }
        for number, (scenario, candidate) in enumerate(candidates.items()):
            run = simulate(scenario, live, candidate, users, work, args.days, args.active, args.seed + number)
            history = decisions_by_day(run, live.version, candidate.version, args.days, settings)
            first = settled(history)
            figures["scenarios"][scenario] = {
                "candidate": candidate.version,
                "expected_ctr": {
                    ("live" if v == live.version else "candidate"): x for v, x in run["expected_ctr"].items()
                },
                "final_decision": history[-1]["decision"],
                "settled_on_day": first["day"] if first else None,
                "events_to_settle": first["events"] if first else None,
                "impressions_to_settle": first["impressions"] if first else None,
                "final": history[-1],
                "by_day": [{k: h[k] for k in ("day", "decision", "events")} for h in history],
                "requests": run["requests"],
                "seconds": run["seconds"],
            }
            log.info("%s: %s", scenario, json.dumps(figures["scenarios"][scenario]["final"]))
    outcome = {s: v["final_decision"] for s, v in figures["scenarios"].items()}
    checks = {
        "better_promoted": outcome["better"] == "promote",
        "worse_kept": outcome["worse"] == "keep",
        "copy_inconclusive": outcome["copy"] == "inconclusive",
    }
    figures["verdict"] = {"pass": all(checks.values()), "checks": checks}
    print(json.dumps(figures, default=float))


if __name__ == "__main__":
    main()
