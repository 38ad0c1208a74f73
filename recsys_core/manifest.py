"""The serving manifest: the exact artifacts the service may load, written last and atomically.

It names every file by path and sha256, so the service loads exactly what passed the
pipeline's checks and can refuse a file that changed since. Writing goes to a temporary
file in the same directory and is renamed over the old manifest: a reader sees the old
manifest or the new one, never half of one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recsys_core.files import file_sha256, write_atomically

MANIFEST_FILE, CANDIDATE_FILE = "manifest.json", "candidate.json"


def live_manifest_path(artifact_root: str | Path) -> Path:
    """Where the pipeline publishes the manifest the service follows."""
    return Path(artifact_root) / "serving" / MANIFEST_FILE


def candidate_manifest_path(serving_dir: str | Path) -> Path:
    """The candidate an experiment serves to its share of users, next to the live manifest."""
    return Path(serving_dir) / CANDIDATE_FILE


class ManifestError(RuntimeError):
    """A manifest that cannot be served: missing or truncated file, changed hash, wrong
    dimension, malformed JSON. The message names the artifact and what is wrong with it."""


@dataclass(frozen=True)
class ArtifactRef:
    path: str  # the artifact's directory
    file: str  # its main file, the one hashed
    sha256: str
    bytes: int | None = None  # its size when published (None in manifests that predate it)

    @property
    def directory(self) -> Path:
        return Path(self.path)

    @property
    def target(self) -> Path:
        return Path(self.path, self.file)

    def problem(self, name: str = "artifact") -> str | None:
        """What is wrong with the file on disk, as `<name>: <file> <what>`; None when it is intact."""
        target = self.target
        if not target.is_file():
            return f"{name}: artifact file missing: {target}"
        size = target.stat().st_size
        if self.bytes is not None and size != self.bytes:
            what = "truncated" if size < self.bytes else "grown"
            return (
                f"{name}: {target} is {what}: {size} bytes, the manifest says {self.bytes}; "
                "it changed since it was checked"
            )
        actual = file_sha256(target)
        if actual != self.sha256:
            return (
                f"{name}: {target} changed since it was checked: sha256 mismatch "
                f"({actual[:12]}... on disk, {self.sha256[:12]}... in the manifest; {size} bytes)"
            )
        return None

    def verify(self, name: str = "artifact") -> None:
        problem = self.problem(name)
        if problem:
            raise ManifestError(problem)

    @classmethod
    def of_directory(cls, directory: Path, file: str) -> ArtifactRef:
        directory = Path(directory)
        target = directory / file
        return cls(path=str(directory.resolve()), file=file, sha256=file_sha256(target), bytes=target.stat().st_size)


@dataclass(frozen=True)
class ServingManifest:
    version: str
    created_at: str
    model_version: str
    model: ArtifactRef
    graph: ArtifactRef
    user_embeddings: ArtifactRef
    place_embeddings: ArtifactRef
    place_indices: dict[str, ArtifactRef]  # city id (as text) -> index
    user_indices: dict[str, ArtifactRef]
    # LastFM-style data has explicit friendships: people results then leave existing friends out.
    social_edges_are_friendships: bool = False
    # The place model's arrays (`ranking.PlaceBlend`); None: places are ranked by GraphRec alone.
    place_model: ArtifactRef | None = None
    # The people model's candidates (`ranking.PeopleModel`); None: people come from the user index.
    people_model: ArtifactRef | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def refs(self) -> list[ArtifactRef]:
        return list(self.named_refs().values())

    def named_refs(self) -> dict[str, ArtifactRef]:
        """Every artifact under the name errors use: `graph`, `place_index[city 3]`, ..."""
        return {
            "model": self.model,
            "graph": self.graph,
            "user_embeddings": self.user_embeddings,
            "place_embeddings": self.place_embeddings,
            **{f"place_index[city {c}]": ref for c, ref in self.place_indices.items()},
            **{f"user_index[city {c}]": ref for c, ref in self.user_indices.items()},
            **({"place_model": self.place_model} if self.place_model is not None else {}),
            **({"people_model": self.people_model} if self.people_model is not None else {}),
        }

    def verify(self) -> None:
        """Every file present, of its recorded size and sha256; all problems in one error."""
        problems = [p for name, ref in self.named_refs().items() if (p := ref.problem(name))]
        if problems:
            raise ManifestError("; ".join(problems))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServingManifest:
        try:
            raw = json.loads(text)

            def ref(value: dict[str, Any]) -> ArtifactRef:
                return ArtifactRef(**value)

            return cls(
                **{
                    **raw,
                    **{k: ref(raw[k]) for k in ("model", "graph", "user_embeddings", "place_embeddings")},
                    "place_indices": {c: ref(v) for c, v in raw["place_indices"].items()},
                    "user_indices": {c: ref(v) for c, v in raw["user_indices"].items()},
                    "place_model": ref(raw["place_model"]) if raw.get("place_model") else None,
                    "people_model": ref(raw["people_model"]) if raw.get("people_model") else None,
                }
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"malformed serving manifest: {type(exc).__name__}: {exc}") from exc

    def write(self, path: Path) -> Path:
        """Atomic replace: temp file in the same directory, fsync, rename, fsync the directory.

        A writer killed at any point leaves the old manifest byte for byte (and at worst a
        stray `.manifest-*.tmp`, which no reader looks at)."""
        return write_atomically(Path(path), self.to_json().encode(), prefix=".manifest-")

    @classmethod
    def read(cls, path: Path) -> ServingManifest:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ManifestError(f"cannot read serving manifest {path}: {exc}") from exc
        return cls.from_json(text)
