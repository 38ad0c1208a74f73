"""Faults: a manifest naming a missing, truncated or corrupted artifact is refused with the
artifact and the problem named while the previous version keeps serving; a process killed in
the middle of writing an artifact or publishing the manifest leaves the previous ones byte for
byte and the next run succeeds; a service started before any manifest exists serves as soon
as one appears."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from litestar.testing import TestClient

from recsys_core.manifest import ArtifactRef, ServingManifest
from recsys_core.retrieval.embeddings import city_rows, embedding_matrix
from recsys_core.retrieval.index import INDEX_FILE, build_city_index
from serving.app import create_app
from serving.config import ServiceSettings

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-admin-token-for-fault-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# --------------------------------------------------------------------------- refused manifests


def _copy(ref: ArtifactRef, where: Path) -> Path:
    """A private copy of an artifact's directory, so a fault never touches the served world."""
    shutil.copytree(ref.directory, where)
    return where


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def missing_file(m: ServingManifest, tmp: Path):
    copy = _copy(m.graph, tmp / "graph")
    ref = ArtifactRef.of_directory(copy, m.graph.file)
    (copy / m.graph.file).unlink()
    return dataclasses.replace(m, graph=ref), ["graph: artifact file missing", str(copy / m.graph.file)]


def truncated_file(m: ServingManifest, tmp: Path):
    copy = _copy(m.user_embeddings, tmp / "users")
    ref = ArtifactRef.of_directory(copy, m.user_embeddings.file)  # records the size
    _truncate(copy / ref.file)
    return dataclasses.replace(m, user_embeddings=ref), [
        "user_embeddings: ",
        "is truncated",
        f"the manifest says {ref.bytes}",
    ]


def truncated_file_without_a_recorded_size(m: ServingManifest, tmp: Path):
    copy = _copy(m.model, tmp / "model")
    ref = dataclasses.replace(ArtifactRef.of_directory(copy, m.model.file), bytes=None)  # an older manifest
    _truncate(copy / ref.file)
    return dataclasses.replace(m, model=ref), ["model: ", "changed since it was checked: sha256 mismatch"]


def truncated_before_it_was_hashed(m: ServingManifest, tmp: Path):
    """A manifest consistent with a broken file (hashed after a writer died): loading names it."""
    city, source = next(iter(m.place_indices.items()))
    copy = _copy(source, tmp / "index")
    _truncate(copy / INDEX_FILE)
    ref = ArtifactRef.of_directory(copy, INDEX_FILE)
    return dataclasses.replace(m, place_indices={**m.place_indices, city: ref}), [
        f"place_index[city {city}] (",
        "cannot be loaded",
    ]


def sha256_mismatch(m: ServingManifest, tmp: Path):
    copy = _copy(m.place_embeddings, tmp / "places")
    ref = ArtifactRef.of_directory(copy, m.place_embeddings.file)
    _flip_a_byte(copy / ref.file)  # same size, other content
    return dataclasses.replace(m, place_embeddings=ref), ["place_embeddings: ", "sha256 mismatch"]


def embedding_dimension(m: ServingManifest, tmp: Path):
    table = pq.read_table(m.user_embeddings.target)
    vectors = embedding_matrix(table)
    narrow = pa.FixedSizeListArray.from_arrays(pa.array(vectors[:, :-8].ravel()), vectors.shape[1] - 8)
    (tmp / "users").mkdir()
    pq.write_table(
        table.set_column(table.schema.get_field_index("embedding"), "embedding", narrow),
        tmp / "users" / "table.parquet",
    )
    ref = ArtifactRef.of_directory(tmp / "users", "table.parquet")
    dim = vectors.shape[1]
    return dataclasses.replace(m, user_embeddings=ref), [
        "user_embeddings (",
        f"has dimension {dim - 8}, but the model's embeddings have {dim}",
    ]


def index_dimension(m: ServingManifest, tmp: Path):
    city = next(iter(m.user_indices))
    rows = city_rows(pq.read_table(m.user_embeddings.target), int(city))
    vectors = embedding_matrix(rows)
    wide = np.hstack([vectors, np.ones((len(vectors), 1), np.float32)])
    ref = ArtifactRef.of_directory(
        tmp / "index", build_city_index(rows.column("user_id").to_numpy(), wide).save(tmp / "index").name
    )
    return (
        dataclasses.replace(m, user_indices={**m.user_indices, city: ref}),
        [f"user_index[city {city}] (", f"has dimension {vectors.shape[1] + 1}"],
    )


def index_of_another_city(m: ServingManifest, tmp: Path):
    first, second = list(m.place_indices)[:2]
    return (
        dataclasses.replace(m, place_indices={**m.place_indices, first: m.place_indices[second]}),
        [f"place_index[city {first}] (", "ids that are not the city's nodes"],
    )


def no_index_for_a_city(m: ServingManifest, tmp: Path):
    city = next(iter(m.user_indices))
    indices = {c: ref for c, ref in m.user_indices.items() if c != city}
    return dataclasses.replace(m, user_indices=indices), [f"user_index: the manifest has no index for cities [{city}]"]


def malformed_json(m: ServingManifest, tmp: Path):
    return m.to_json()[: len(m.to_json()) // 2], ["malformed serving manifest"]


FAULTS = [
    missing_file,
    truncated_file,
    truncated_file_without_a_recorded_size,
    truncated_before_it_was_hashed,
    sha256_mismatch,
    embedding_dimension,
    index_dimension,
    index_of_another_city,
    no_index_for_a_city,
    malformed_json,
]


def _publish(manifest: ServingManifest | str, live: Path) -> None:
    text = manifest if isinstance(manifest, str) else manifest.to_json()
    tmp = live.with_name(".publishing")
    tmp.write_text(text)
    os.replace(tmp, live)


@pytest.fixture(scope="module")
def published(world, tmp_path_factory) -> Path:
    """A complete artifact set of the small world (untrained weights: serving does not care) and
    its manifest, written by `publish` without the orchestrator and its quality gate."""
    from recsys_core.graph import build_from_world
    from recsys_core.model.config import ModelConfig
    from recsys_core.model.graphrec import GraphRec
    from recsys_core.model.inputs import GraphInputs
    from recsys_core.retrieval.publish import publish

    bundle = build_from_world(world)
    torch.manual_seed(0)
    model = GraphRec(
        ModelConfig(d_model=32, head_hidden=(64, 32), d_ctx=8), GraphInputs.from_hetero(bundle.data).edge_dims()
    )
    return publish(model.eval(), bundle, tmp_path_factory.mktemp("published"), "v0")


@pytest.fixture(scope="module")
def some_user(world) -> int:
    """The user with the most history."""
    users = world["interactions"].column("user_id").to_numpy()
    return int(np.bincount(users).argmax())


@pytest.fixture(scope="module")
def live(published, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "manifest.json"
    _publish(dataclasses.replace(ServingManifest.read(published), version="v1", model_version="graphrec-v1"), path)
    return path


@pytest.fixture(scope="module")
def client(live):
    # Polls hourly: only POST /admin/reload loads, so each case reloads exactly once.
    with TestClient(app=create_app(live, poll_interval_s=3600, settings=ServiceSettings(admin_token=TOKEN))) as c:
        assert c.get("/version").json()["version"] == "v1"
        yield c


@pytest.mark.parametrize("fault", FAULTS, ids=[f.__name__ for f in FAULTS])
def test_a_faulty_manifest_is_refused_naming_the_artifact_and_the_previous_version_keeps_serving(
    published, live, client, some_user, fault, tmp_path
):
    source = dataclasses.replace(ServingManifest.read(published), version=f"v-{fault.__name__}")
    broken, expected = fault(source, tmp_path)
    _publish(broken, live)

    reload = client.post("/admin/reload", headers=AUTH).json()
    assert reload["reloaded"] is False and reload["version"] == "v1"
    for text in expected:
        assert text in reload["last_reload_error"], reload["last_reload_error"]

    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["version"] == "v1"
    assert ready.json()["detail"] == reload["last_reload_error"]  # /ready says what failed too
    version = client.get("/version").json()
    assert version["version"] == "v1" and version["last_reload_error"] == reload["last_reload_error"]
    response = client.get("/recommend/places", params={"user_id": some_user, "top_k": 5})
    assert response.status_code == 200 and response.json()["model_version"] == "graphrec-v1"


def test_after_refused_manifests_a_sound_one_is_served_and_the_error_clears(published, live, client, some_user):
    _publish(dataclasses.replace(ServingManifest.read(published), version="v2", model_version="graphrec-v2"), live)
    reload = client.post("/admin/reload", headers=AUTH).json()
    assert reload["reloaded"] is True and reload["version"] == "v2" and reload["last_reload_error"] is None
    assert client.get("/recommend/places", params={"user_id": some_user}).json()["model_version"] == "graphrec-v2"


# --------------------------------------------------------------------------- no manifest yet


def test_a_service_started_without_a_manifest_serves_as_soon_as_one_appears(published, some_user, tmp_path):
    live = tmp_path / "serving" / "manifest.json"
    with TestClient(app=create_app(live, poll_interval_s=0.05)) as c:
        assert c.get("/health").json() == {"status": "ok"}
        ready = c.get("/ready")
        assert ready.status_code == 503 and "no serving manifest" in ready.text
        assert c.get("/recommend/places", params={"user_id": some_user}).status_code == 503

        ServingManifest.read(published).write(live)  # the pipeline publishes its first one
        deadline = time.monotonic() + 60
        while c.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/ready").json()["version"] == ServingManifest.read(live).version
        assert c.get("/recommend/places", params={"user_id": some_user}).status_code == 200
        assert c.get("/version").json()["last_reload_error"] is None


# --------------------------------------------------------------------------- killed writers


def _run_until_marker(script: str, args: list[str], marker: Path, timeout_s: float = 240) -> None:
    """Start `script` in a fresh interpreter, wait until it writes `marker` (it then stalls at
    the point under test) and SIGKILL it there."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None  # stdout=PIPE
    try:
        deadline = time.monotonic() + timeout_s
        while not marker.exists():
            if process.poll() is not None:
                output = process.stdout.read().decode()[-3000:]
                pytest.fail(f"the writer exited ({process.returncode}) before the kill point:\n{output}")
            if time.monotonic() > deadline:
                pytest.fail("the writer never reached the kill point")
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


KILLED_WHILE_PUBLISHING = r"""
import dataclasses, os, sys, time
from pathlib import Path
from recsys_core.manifest import ServingManifest

live, marker, point = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def stall(*args, **kwargs):
    marker.write_text(point)
    time.sleep(600)

setattr(os, point, stall)  # os.fsync: the temp file is written, not flushed; os.replace: not yet renamed
dataclasses.replace(ServingManifest.read(live), version="v2-killed").write(live)
"""


def _small_manifest(version: str) -> ServingManifest:
    ref = ArtifactRef(path="/artifacts/x", file="f", sha256="0" * 64, bytes=1)
    return ServingManifest(
        version=version,
        created_at="2025-01-01T00:00:00+00:00",
        model_version=f"graphrec-{version}",
        model=ref,
        graph=ref,
        user_embeddings=ref,
        place_embeddings=ref,
        place_indices={"0": ref},
        user_indices={"0": ref},
        extra={"padding": "x" * 200_000},
    )


@pytest.mark.parametrize("point", ["fsync", "replace"])
def test_a_publisher_killed_mid_write_leaves_the_live_manifest_byte_identical(tmp_path, point):
    live = tmp_path / "serving" / "manifest.json"
    _small_manifest("v1").write(live)
    before = live.read_bytes()

    _run_until_marker(KILLED_WHILE_PUBLISHING, [str(live), str(tmp_path / "marker"), point], tmp_path / "marker")

    assert live.read_bytes() == before
    assert ServingManifest.read(live).version == "v1"
    leftovers = [p.name for p in live.parent.iterdir() if p != live]
    assert leftovers and all(name.startswith(".manifest-") and name.endswith(".tmp") for name in leftovers)
    _small_manifest("v2").write(live)  # the next publish succeeds
    assert ServingManifest.read(live).version == "v2"


KILLED_WHILE_WRITING_AN_ARTIFACT = r"""
import sys, time
from pathlib import Path
import pyarrow.parquet as pq
from dagster import DagsterInstance, materialize
from recsys_assets.definitions import build_definitions
from recsys_assets.resources import TrainingSettings, WorldSource

root, home, marker, city = sys.argv[1:5]
write_table = pq.write_table

def dies_half_way(table, where, *args, **kwargs):
    write_table(table, where, *args, **kwargs)
    with open(where, "r+b") as f:  # half the file is on disk when the process dies
        f.truncate(Path(where).stat().st_size // 2)
    Path(marker).write_text(str(where))
    time.sleep(600)

pq.write_table = dies_half_way
defs = build_definitions(root, WorldSource(n_users=160, n_places=160), TrainingSettings())
materialize(list(defs.assets), selection=["places"], partition_key=city, instance=DagsterInstance.local_temp(home),
            resources=defs.resources)
"""


def test_a_run_killed_while_writing_an_artifact_leaves_the_previous_one_and_the_next_run_succeeds(tmp_path):
    from dagster import AssetKey, DagsterInstance, materialize

    from recsys_assets.definitions import build_definitions
    from recsys_assets.io_manager import latest_materialization, load_latest
    from recsys_assets.resources import TrainingSettings, WorldSource

    root, home, marker, city = tmp_path / "artifacts", tmp_path / "home", tmp_path / "marker", "london"
    home.mkdir()
    defs = build_definitions(str(root), WorldSource(n_users=160, n_places=160), TrainingSettings())
    instance = DagsterInstance.local_temp(str(home))
    places = AssetKey("places")
    vocabulary = materialize(list(defs.assets), selection=["vocabulary"], instance=instance, resources=defs.resources)
    assert vocabulary.success  # registers the city partitions the killed run and the next one write to

    def run():
        return materialize(
            list(defs.assets),
            selection=["places"],
            partition_key=city,
            instance=instance,
            resources=defs.resources,
        )

    assert run().success
    before, files, table = (
        latest_materialization(instance, places, city),
        _files(root),
        load_latest(instance, places, [city]),
    )

    _run_until_marker(KILLED_WHILE_WRITING_AN_ARTIFACT, [str(root), str(home), str(marker), city], marker)

    half_written = Path(marker.read_text())
    assert half_written.exists() and ".partial-" in half_written.parent.name  # it died inside a hidden temp directory
    killed_run = half_written.parent.name[1:].split(".partial-")[0]
    assert not (half_written.parent.parent / killed_run).exists()  # ... so its artifact directory never appeared
    assert latest_materialization(instance, places, city).storage_id == before.storage_id
    assert {p: p.read_bytes() for p in files} == files  # every earlier artifact byte for byte
    assert load_latest(instance, places, [city]).equals(table)

    assert run().success  # the next run completes and is what downstream reads
    after = latest_materialization(instance, places, city)
    assert after.storage_id != before.storage_id
    assert load_latest(instance, places, [city]).equals(table)


# --------------------------------------------------------------------------- a replaced version is freed


def test_a_replaced_version_is_freed_by_reference_counting_at_the_swap(published, tmp_path):
    """No reference cycle keeps a replaced model alive: the swap needs no full-heap collection
    (which would pause every request) and memory does not grow by a version per reload."""
    import gc
    import weakref

    from serving.state import ArtifactHolder

    live = tmp_path / "manifest.json"
    _publish(dataclasses.replace(ServingManifest.read(published), version="a"), live)
    holder = ArtifactHolder(live, poll_interval_s=3600)
    assert holder.load_if_changed()
    old = holder.current.artifacts
    refs = [weakref.ref(old.model), weakref.ref(old.place_head)]
    old.place_head._context((0, 0, (), ()))  # fill the context cache, as requests do
    del old
    gc.disable()  # only reference counting may free it
    try:
        _publish(dataclasses.replace(ServingManifest.read(published), version="b"), live)
        assert holder.load_if_changed() and holder.current.artifacts.manifest.version == "b"
        assert [r() is None for r in refs] == [True, True]
    finally:
        gc.enable()
