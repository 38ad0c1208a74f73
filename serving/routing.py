"""Which served version answers a request: the live one, or the candidate for the users an
experiment assigns to it.

The experiment file is re-read at every poll. A file that cannot be used (malformed, a share out
of range) switches the experiment off, with the reason in /version, rather than keep a split
someone was trying to change; a candidate that is not loaded (none published, or it failed its
checks) sends everyone to live.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from recsys_core.feedback.experiment import CANDIDATE, LIVE, Arm, Experiment, ExperimentError, read_experiment
from serving import metrics
from serving.state import ArtifactHolder, Served

logger = logging.getLogger("serving.experiment")


class ExperimentWatcher:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.current: Experiment | None = None
        self.last_error: str | None = None

    def refresh(self) -> None:
        try:
            experiment = read_experiment(self.path)
        except (ExperimentError, OSError, UnicodeDecodeError) as exc:
            if self.current is not None or self.last_error != str(exc):
                logger.error("experiment file %s not usable, experiment off: %s", self.path, exc)
            self.current, self.last_error = None, str(exc)
            return
        if experiment != self.current:
            logger.info("experiment now %s", experiment or "none")
        self.current, self.last_error = experiment, None


@dataclass(frozen=True)
class Routed:
    served: Served
    arm: Arm

    @property
    def variant(self) -> str:
        """What responses and events call the version: its manifest version."""
        return self.served.artifacts.manifest.version


class Router:
    def __init__(self, live: ArtifactHolder, candidate: ArtifactHolder, experiment: ExperimentWatcher):
        self.live, self.candidate, self.experiment = live, candidate, experiment

    def route(self, user_id: int, live: Served) -> Routed:
        """`live`: the live version this request already holds (one read of the reference); the
        experiment and the candidate are read once too, so a swap mid-request changes nothing."""
        experiment, candidate = self.experiment.current, self.candidate.current
        routed = Routed(live, LIVE)
        # an experiment naming another candidate than the one loaded sends everyone to live
        if (
            experiment is not None
            and candidate is not None
            and experiment.candidate_version in ("", candidate.artifacts.manifest.version)
            and experiment.arm(user_id) == CANDIDATE
        ):
            routed = Routed(candidate, CANDIDATE)
        metrics.ASSIGNMENTS.labels(routed.arm).inc()
        return routed
