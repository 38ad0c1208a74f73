"""Artifact storage: every materialization writes to its own immutable directory.

Paths are `<root>/<asset>/<partition or all>/<run_id>/`, so a failed or killed run never
touches what an earlier run produced. Each artifact is written into a hidden temporary
directory beside its final one (`.<run_id>.partial-*`) and renamed into place only once
complete, so `<run_id>/` is whole or absent: a process killed mid-write leaves at most a
partial directory that nothing reads. Downstream steps find the newest artifact through
the `path` metadata of the latest materialization recorded in the Dagster instance, which
is only recorded after the rename.
Tables are Parquet with the contract's schema; the graph is a dict of plain tensors
(loaded with weights_only=True). Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import AssetKey, AssetRecordsFilter, ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from recsys_core.evaluation.compare import Comparison
from recsys_core.files import file_sha256, fsync_directory, fsync_tree
from recsys_core.graph import GraphBundle, load_graph, save_graph
from recsys_core.manifest import MANIFEST_FILE, ServingManifest
from recsys_core.retrieval.index import CityIndex
from recsys_core.training.pipeline import TrainedModel
from recsys_core.vocabulary import Vocabulary

MANIFEST = "artifact.json"


class ArtifactIOManager(ConfigurableIOManager):
    root: str

    def _directory(self, context: OutputContext) -> Path:
        partition = context.partition_key if context.has_partition_key else "all"
        return Path(self.root, *context.asset_key.path, partition, context.run_id)

    def handle_output(self, context: OutputContext, obj: object) -> None:
        final = self._directory(context)
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-"))
        try:
            partial.chmod(0o755)  # mkdtemp's 0700 would hide the artifact from a service running as another user
            fmt, main = _write(context, obj, partial)
            sha = file_sha256(main)
            record: dict[str, str | int] = {
                "format": fmt,
                "file": main.name,
                "sha256": sha,
                "bytes": main.stat().st_size,
            }
            (partial / MANIFEST).write_text(json.dumps(record))
            fsync_tree(partial)
            _move_into_place(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        context.add_output_metadata({"path": MetadataValue.path(str(final)), "sha256": sha, "bytes": record["bytes"]})

    def load_input(self, context: InputContext) -> object:
        partitions: Sequence[str | None] = context.asset_partition_keys if context.has_asset_partitions else [None]
        return load_latest(context.instance, context.asset_key, partitions)


def _write(context: OutputContext, obj: object, directory: Path) -> tuple[str, Path]:
    """Write `obj` into `directory`; (format, main file)."""
    if isinstance(obj, pa.Table):
        main = directory / "table.parquet"
        pq.write_table(obj, main)
        return "table", main
    if isinstance(obj, GraphBundle):
        return "graph", save_graph(obj, directory)
    if isinstance(obj, TrainedModel):
        return "model", obj.save(directory)
    if isinstance(obj, Comparison):
        return "evaluation", obj.save(directory)
    if isinstance(obj, CityIndex):
        return "index", obj.save(directory)
    if isinstance(obj, ServingManifest):
        return "manifest", obj.write(directory / MANIFEST_FILE)
    if isinstance(obj, Vocabulary):
        return "vocabulary", obj.save(directory)
    raise TypeError(f"{context.asset_key.to_user_string()}: cannot store a {type(obj).__name__}")


def _move_into_place(partial: Path, final: Path) -> None:
    """Rename a complete artifact directory to its final name (a re-executed step replaces
    its own earlier output; no other run writes under this run id)."""
    if final.exists():
        stale = final.with_name(f".{final.name}.replaced-{os.getpid()}")
        final.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    partial.rename(final)
    fsync_directory(final.parent)


LOADERS = {
    "table": lambda directory, manifest: pq.read_table(directory / manifest["file"]),
    "graph": lambda directory, manifest: load_graph(directory),
    "model": lambda directory, manifest: TrainedModel.load(directory),
    "evaluation": lambda directory, manifest: Comparison.load(directory),
    "index": lambda directory, manifest: CityIndex.load(directory),
    "manifest": lambda directory, manifest: ServingManifest.read(directory / manifest["file"]),
    "vocabulary": lambda directory, manifest: Vocabulary.load(directory),
}


def load_artifact(directory: Path) -> object:
    manifest = json.loads((directory / MANIFEST).read_text())
    return LOADERS[manifest["format"]](directory, manifest)


def load_latest(instance, asset_key: AssetKey, partitions: Sequence[str | None]) -> object:
    """The newest artifact of each partition; tables of several partitions are concatenated."""
    loaded = [load_artifact(latest_artifact_path(instance, asset_key, p)) for p in partitions]
    if len(loaded) == 1:
        return loaded[0]
    tables = [artifact for artifact in loaded if isinstance(artifact, pa.Table)]
    if len(tables) != len(loaded):
        raise TypeError(f"{asset_key.to_user_string()}: only tables of several partitions can be concatenated")
    return pa.concat_tables(tables)


def load_latest_table(instance, asset_key: AssetKey, partitions: Sequence[str | None]) -> pa.Table:
    """`load_latest` of a table asset."""
    table = load_latest(instance, asset_key, partitions)
    if not isinstance(table, pa.Table):
        raise TypeError(f"{asset_key.to_user_string()} is not a table but a {type(table).__name__}")
    return table


def latest_table_schema(instance, asset_key: AssetKey, partition: str | None) -> pa.Schema:
    """The schema (with its provenance metadata) of a table asset's newest partition, rows unread."""
    directory = latest_artifact_path(instance, asset_key, partition)
    manifest = json.loads((directory / MANIFEST).read_text())
    if manifest["format"] != "table":
        raise TypeError(f"{asset_key.to_user_string()} is not a table but a {manifest['format']}")
    return pq.read_schema(directory / manifest["file"])


def latest_materialization(instance, asset_key: AssetKey, partition: str | None = None):
    """The newest materialization record of an asset (partition), or None."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0] if records else None


def latest_artifact_path(instance, asset_key: AssetKey, partition: str | None) -> Path:
    """Directory of the newest materialization of an asset (partition), from the instance."""
    record = latest_materialization(instance, asset_key, partition)
    where = f"{asset_key.to_user_string()}" + (f" [{partition}]" if partition else "")
    if record is None:
        raise FileNotFoundError(f"{where} has not been materialized yet")
    metadata = record.asset_materialization.metadata
    if "path" not in metadata:
        raise FileNotFoundError(f"{where}: latest materialization records no artifact path")
    return Path(metadata["path"].value)
