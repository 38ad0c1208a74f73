"""The serving manifest: the exact artifacts the service may load, written last and atomically.

It names every file by path and sha256, so the service loads exactly what passed the
pipeline's checks and can refuse a file that changed since. Writing goes to a temporary
file in the same directory and is renamed over the old manifest: a reader sees the old
manifest or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_FILE = "manifest.json"


def live_manifest_path(artifact_root: str | Path) -> Path:
    """Where the pipeline publishes the manifest the service follows."""
    return Path(artifact_root) / "serving" / MANIFEST_FILE


class ManifestError(RuntimeError):
    """A manifest that cannot be served: missing file, changed hash, malformed JSON."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ArtifactRef:
    path: str  # the artifact's directory
    file: str  # its main file, the one hashed
    sha256: str

    @property
    def directory(self) -> Path:
        return Path(self.path)

    def verify(self) -> None:
        target = Path(self.path, self.file)
        if not target.exists():
            raise ManifestError(f"artifact file missing: {target}")
        actual = file_sha256(target)
        if actual != self.sha256:
            raise ManifestError(f"artifact {target} changed since it was checked: sha256 {actual[:12]} != {self.sha256[:12]}")

    @classmethod
    def of_directory(cls, directory: Path, file: str) -> "ArtifactRef":
        directory = Path(directory)
        return cls(path=str(directory.resolve()), file=file, sha256=file_sha256(directory / file))


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
    extra: dict[str, object] = field(default_factory=dict)

    def refs(self) -> list[ArtifactRef]:
        return [self.model, self.graph, self.user_embeddings, self.place_embeddings, *self.place_indices.values(), *self.user_indices.values()]

    def verify(self) -> None:
        for ref in self.refs():
            ref.verify()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ServingManifest":
        try:
            raw = json.loads(text)
            ref = lambda value: ArtifactRef(**value)  # noqa: E731
            return cls(
                **{
                    **raw,
                    **{k: ref(raw[k]) for k in ("model", "graph", "user_embeddings", "place_embeddings")},
                    "place_indices": {c: ref(v) for c, v in raw["place_indices"].items()},
                    "user_indices": {c: ref(v) for c, v in raw["user_indices"].items()},
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"malformed serving manifest: {exc}") from exc

    def write(self, path: Path) -> Path:
        """Atomic replace: temp file in the same directory, fsync, rename."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifest-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def read(cls, path: Path) -> "ServingManifest":
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ManifestError(f"cannot read serving manifest {path}: {exc}") from exc
        return cls.from_json(text)
