"""An A/B experiment between the live version and a candidate: who sees which.

Users are assigned by a stable hash of the experiment's salt and their `user_id`: the same user
sees the same arm on every request and every worker, for as long as the salt stays, and a new
salt draws a fresh, independent split. The experiment is a small JSON file next to the live
manifest; the service re-reads it every poll, so switching it off (or changing the share) takes
effect without a restart, and everyone is back on live the moment it is off.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from recsys_core.files import write_text_atomically

EXPERIMENT_FILE = "experiment.json"
Arm = Literal["live", "candidate"]
LIVE: Arm = "live"
CANDIDATE: Arm = "candidate"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class ExperimentError(ValueError):
    """An experiment file that cannot be used; the message says which field and why."""


def bucket(salt: str, user_id: int) -> float:
    """A user's place in [0, 1) for this salt: uniform, stable, independent across salts."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class Experiment:
    name: str
    salt: str
    candidate_share: float  # of users who see the candidate, e.g. 0.1
    enabled: bool = True
    started_at: str = ""  # ISO time the experiment (this salt) began; metrics count events from it
    live_version: str = ""  # the manifest versions it compares (the events' `variant`s)
    candidate_version: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not _NAME.match(self.name):
            problems.append(f"name must be 1-64 letters, digits, '_', '.' or '-', got {self.name!r}")
        if not self.salt or len(self.salt) > 128:
            problems.append("salt must be 1-128 characters")
        if not isinstance(self.candidate_share, int | float) or not 0 <= self.candidate_share <= 1:
            problems.append(f"candidate_share must be between 0 and 1, got {self.candidate_share!r}")
        if self.started_at:
            try:
                dt.datetime.fromisoformat(self.started_at)
            except ValueError:
                problems.append(f"started_at must be an ISO time, got {self.started_at!r}")
        if problems:
            raise ExperimentError("; ".join(problems))

    def arm(self, user_id: int) -> Arm:
        if self.enabled and bucket(self.salt, user_id) < self.candidate_share:
            return CANDIDATE
        return LIVE

    @property
    def start(self) -> dt.datetime | None:
        return dt.datetime.fromisoformat(self.started_at) if self.started_at else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "experiment") -> Experiment:
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise ExperimentError(f"{where}: expected a JSON object")
            return cls(**raw)
        except json.JSONDecodeError as exc:
            raise ExperimentError(f"{where}: malformed JSON: {exc}") from exc
        except TypeError as exc:  # a missing or unknown field
            raise ExperimentError(f"{where}: {exc}") from exc


def experiment_path(serving_dir: Path) -> Path:
    return Path(serving_dir) / EXPERIMENT_FILE


def read_experiment(path: Path) -> Experiment | None:
    """The experiment at `path`; None when there is none."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    return Experiment.from_json(text, str(path))


def write_experiment(path: Path, experiment: Experiment) -> Path:
    return write_text_atomically(Path(path), experiment.to_json(), prefix=".experiment-", mode=0o644)
