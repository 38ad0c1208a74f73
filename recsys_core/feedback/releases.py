"""Which manifest is live, which is the candidate, and every version published before: publish,
promote, pin, and keep the history within a retention rule.

The serving directory holds `manifest.json` (live, what the service follows), `candidate.json`
(the experiment's other arm), `experiment.json`, `pin.json` (live is pinned to a version: nothing
replaces it until unpinned) and `history/<version>.json`, a copy of every published manifest, so
any earlier version can be served again while its artifacts are kept. Every write is atomic.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from recsys_core.feedback.experiment import Experiment, experiment_path, read_experiment, write_experiment
from recsys_core.files import fsync_directory, write_text_atomically
from recsys_core.manifest import MANIFEST_FILE, ManifestError, ServingManifest, candidate_manifest_path

logger = logging.getLogger("recsys.releases")

HISTORY_DIR, PIN_FILE = "history", "pin.json"
DEFAULT_CANDIDATE_SHARE = 0.1
Target = Literal["live", "candidate"]


class ReleaseError(RuntimeError):
    """A publish, promote or pin that cannot be done; the message says why, and nothing changed."""


@dataclass(frozen=True)
class Pin:
    version: str
    pinned_at: str
    reason: str = ""


@dataclass(frozen=True)
class Published:
    target: Target | Literal["held"]  # held: live is pinned, the version went to the history only
    path: Path
    version: str


class ServingDirectory:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @property
    def live(self) -> Path:
        return self.directory / MANIFEST_FILE

    @property
    def candidate(self) -> Path:
        return candidate_manifest_path(self.directory)

    @property
    def experiment(self) -> Path:
        return experiment_path(self.directory)

    @property
    def history(self) -> Path:
        return self.directory / HISTORY_DIR

    @property
    def pin_file(self) -> Path:
        return self.directory / PIN_FILE

    def read(self, which: Target) -> ServingManifest | None:
        path = self.live if which == "live" else self.candidate
        return ServingManifest.read(path) if path.exists() else None

    def pin(self) -> Pin | None:
        if not self.pin_file.exists():
            return None
        try:
            return Pin(**json.loads(self.pin_file.read_text()))
        except (ValueError, TypeError) as exc:
            raise ReleaseError(f"{self.pin_file} is not a pin record ({exc}); remove it to unpin") from exc

    def versions(self) -> list[ServingManifest]:
        """Every published version in the history, oldest first."""
        manifests = []
        for path in sorted(self.history.glob("*.json")) if self.history.is_dir() else []:
            try:
                manifests.append(ServingManifest.read(path))
            except ManifestError as exc:
                logger.warning("skipping unreadable history entry %s: %s", path, exc)
        return sorted(manifests, key=lambda m: m.created_at)

    def _record(self, manifest: ServingManifest) -> None:
        manifest.write(self.history / f"{manifest.version}.json")

    def publish(
        self, manifest: ServingManifest, target: Target = "live", candidate_share: float = DEFAULT_CANDIDATE_SHARE
    ) -> Published:
        """Record `manifest` in the history and make it live, or the candidate of a fresh experiment
        (a new salt: the split of the last experiment does not carry over); with nothing live yet,
        a candidate goes live. Live stays as it is while pinned: the version is only recorded."""
        self._record(manifest)
        live = self.read("live")
        if target == "candidate" and live is not None:
            path = manifest.write(self.candidate)
            now = dt.datetime.now(dt.UTC)
            write_experiment(
                self.experiment,
                Experiment(
                    name=f"candidate-{manifest.version}"[:64],
                    salt=manifest.version,
                    candidate_share=candidate_share,
                    started_at=now.isoformat(),
                    live_version=live.version,
                    candidate_version=manifest.version,
                ),
            )
            return Published("candidate", path, manifest.version)
        pin = self.pin()
        if pin is not None:
            logger.warning("live is pinned to %s: %s recorded, not made live", pin.version, manifest.version)
            return Published("held", self.history / f"{manifest.version}.json", manifest.version)
        return Published("live", manifest.write(self.live), manifest.version)

    def promote(self) -> ServingManifest:
        """The candidate becomes live; the experiment ends (kept, switched off, for its record)."""
        candidate = self.read("candidate")
        if candidate is None:
            raise ReleaseError(f"no candidate to promote: {self.candidate} does not exist")
        pin = self.pin()
        if pin is not None:
            raise ReleaseError(f"live is pinned to {pin.version}: unpin before promoting {candidate.version}")
        candidate.verify()
        self._record(candidate)
        candidate.write(self.live)
        self.end_experiment()
        return candidate

    def end_experiment(self) -> None:
        """Everyone back on live: the candidate is withdrawn and the experiment switched off."""
        experiment = read_experiment(self.experiment)
        if experiment is not None and experiment.enabled:
            write_experiment(self.experiment, replace(experiment, enabled=False))
        if self.candidate.exists():
            self.candidate.unlink()
            fsync_directory(self.directory)

    def pin_version(self, version: str, reason: str = "") -> ServingManifest:
        """Serve `version` from the history again, and keep it live until `unpin`."""
        path = self.history / f"{version}.json"
        if not path.exists():
            known = ", ".join(m.version for m in self.versions()[-10:]) or "none"
            raise ReleaseError(f"no published version {version!r} in {self.history} (latest: {known})")
        manifest = ServingManifest.read(path)
        try:
            manifest.verify()
        except ManifestError as exc:
            raise ReleaseError(f"version {version} cannot be served again: {exc}") from exc
        manifest.write(self.live)
        pin = Pin(version, dt.datetime.now(dt.UTC).isoformat(), reason)
        write_text_atomically(self.pin_file, json.dumps(asdict(pin), indent=2) + "\n", prefix=".pin-", mode=0o644)
        return manifest

    def unpin(self) -> Pin | None:
        pin = self.pin()
        if pin is not None:
            self.pin_file.unlink()
            fsync_directory(self.directory)
        return pin

    def referenced_directories(self) -> set[Path]:
        """Artifact directories named by the live, candidate or any history manifest."""
        manifests = [m for m in (self.read("live"), self.read("candidate")) if m is not None] + self.versions()
        return {Path(ref.path).resolve() for m in manifests for ref in m.refs()}

    def apply_retention(self, keep: int) -> list[str]:
        """Drop history entries beyond the `keep` newest; live, candidate and the pinned version
        always stay. Returns the versions dropped (their artifacts are `artifact_retention`'s)."""
        if keep < 1:
            raise ReleaseError(f"retention must keep at least 1 version, got {keep}")
        protected = {m.version for m in (self.read("live"), self.read("candidate")) if m is not None}
        pin = self.pin()
        if pin is not None:
            protected.add(pin.version)
        versions = self.versions()
        dropped = [m.version for m in versions[: max(0, len(versions) - keep)] if m.version not in protected]
        for version in dropped:
            (self.history / f"{version}.json").unlink(missing_ok=True)
        if dropped:
            fsync_directory(self.history)
        return dropped


def artifact_retention(artifact_root: Path, referenced: set[Path], keep_runs: int, dry_run: bool = False) -> list[Path]:
    """Delete artifact run directories (`<root>/<asset>/<partition>/<run_id>/`) that no kept manifest
    references, beyond the `keep_runs` newest of each asset partition (the newest is what the
    pipeline reads next). Returns what was (or, `dry_run`, would be) deleted."""
    if keep_runs < 1:
        raise ReleaseError(f"artifact retention must keep at least 1 run per asset partition, got {keep_runs}")
    doomed = []
    for partition in sorted({p.parent.parent for p in Path(artifact_root).glob("*/*/*/artifact.json")}):
        runs = sorted(
            (d for d in partition.iterdir() if d.is_dir() and not d.name.startswith(".")),
            key=lambda d: d.stat().st_mtime,
            reverse=True,
        )
        doomed += [run for run in runs[keep_runs:] if run.resolve() not in referenced and not _holds(run, referenced)]
    for run in [] if dry_run else doomed:
        shutil.rmtree(run)
    return doomed


def _holds(run: Path, referenced: set[Path]) -> bool:
    """A run directory some referenced artifact lives inside (the place model under the model's)."""
    resolved = run.resolve()
    return any(resolved in ref.parents for ref in referenced)
