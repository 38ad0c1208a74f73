"""`recsys publish` (versions: list, pin, unpin, promote, retention) and `recsys experiment`
(status, on, off, share): the release controls, on the serving directory the service follows.

    recsys publish --list
    recsys publish --pin 20261202T101500Z-1a2b3c4d --reason "new model drops jazz"
    recsys publish --unpin
    recsys publish --promote
    recsys publish --retain 10 --keep-runs 3 [--dry-run]
    recsys experiment status | off | on | share 0.2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from recsys_core.cli import Command, CommandError
from recsys_core.feedback.experiment import read_experiment, write_experiment
from recsys_core.feedback.releases import ReleaseError, ServingDirectory, artifact_retention
from recsys_core.manifest import ManifestError

ARTIFACTS_ENV = "RECSYS_ARTIFACTS"
DEFAULT_ARTIFACTS = Path("var") / "artifacts"


def _artifacts(args: argparse.Namespace) -> Path:
    return Path(args.artifacts or os.environ.get(ARTIFACTS_ENV) or DEFAULT_ARTIFACTS)


def _directory(args: argparse.Namespace) -> ServingDirectory:
    return ServingDirectory(_artifacts(args) / "serving")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", help=f"artifact root (default ${ARTIFACTS_ENV} or {DEFAULT_ARTIFACTS})")


def _publish_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="the published versions, oldest first")
    action.add_argument("--pin", metavar="VERSION", help="serve this earlier version again and keep it live")
    action.add_argument("--unpin", action="store_true", help="let new publications replace live again")
    action.add_argument("--promote", action="store_true", help="make the experiment's candidate live")
    action.add_argument("--retain", type=int, metavar="N", help="keep the N newest versions (and their artifacts)")
    parser.add_argument("--reason", default="", help="why a version is pinned (shown by /version)")
    parser.add_argument("--keep-runs", type=int, default=3, help="with --retain: artifact runs kept per partition")
    parser.add_argument("--dry-run", action="store_true", help="with --retain: say what would go")


def _publish(args: argparse.Namespace) -> None:
    releases = _directory(args)
    if args.list:
        live, candidate, pin = releases.read("live"), releases.read("candidate"), releases.pin()
        for manifest in releases.versions():
            marks = [
                name
                for name, on in (
                    ("live", live and live.version == manifest.version),
                    ("candidate", candidate and candidate.version == manifest.version),
                    ("pinned", pin and pin.version == manifest.version),
                )
                if on
            ]
            print(f"{manifest.version}  {manifest.model_version}  {manifest.created_at}  {' '.join(marks)}".rstrip())
    elif args.pin:
        manifest = releases.pin_version(args.pin, args.reason)
        print(f"live is now {manifest.version} ({manifest.model_version}), pinned; `recsys publish --unpin` to release")
    elif args.unpin:
        pin = releases.unpin()
        print(f"unpinned {pin.version}" if pin else "live was not pinned")
    elif args.promote:
        manifest = releases.promote()
        print(f"promoted {manifest.version} ({manifest.model_version}) to live; the experiment is over")
    else:
        dropped = [] if args.dry_run else releases.apply_retention(args.retain)
        doomed = artifact_retention(
            _artifacts(args), releases.referenced_directories(), args.keep_runs, dry_run=args.dry_run
        )
        verb = "would delete" if args.dry_run else "deleted"
        print(f"dropped {len(dropped)} versions from the history; {verb} {len(doomed)} artifact runs")
        for path in doomed:
            print(f"  {path}")


PUBLISH = Command(
    "list, pin, unpin or promote served versions, and apply the retention rule",
    _publish_arguments,
    _publish,
    user_errors=(CommandError, ReleaseError, ManifestError, ValueError, FileNotFoundError),
)


def _experiment_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("action", choices=["status", "on", "off", "share"])
    parser.add_argument("value", nargs="?", type=float, help="with share: the candidate's share, 0..1")


def _experiment(args: argparse.Namespace) -> None:
    releases = _directory(args)
    experiment = read_experiment(releases.experiment)
    if experiment is None:
        raise CommandError(f"no experiment at {releases.experiment} (publish a candidate to start one)")
    if args.action == "share":
        if args.value is None:
            raise CommandError("share needs a value between 0 and 1")
        experiment = dataclasses.replace(experiment, candidate_share=args.value)
    elif args.action in ("on", "off"):
        experiment = dataclasses.replace(experiment, enabled=args.action == "on")
    if args.action != "status":
        write_experiment(releases.experiment, experiment)
    candidate = releases.read("candidate")
    print(
        json.dumps(
            {**dataclasses.asdict(experiment), "candidate_loaded_from": str(releases.candidate) if candidate else None},
            indent=2,
        )
    )


EXPERIMENT = Command(
    "show the A/B experiment, switch it on or off, or change the candidate's share (no restart)",
    _experiment_arguments,
    _experiment,
)
