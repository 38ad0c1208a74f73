"""Public-dataset loaders, the validation carve and `recsys benchmark` end to end on small slices.

The slices under tests/data are the first 300 users of the shared Gowalla and LastFM training
files (so the formats are the real ones); the Gowalla slice's user list has one extra user
without a training line, and LastFM's id universe is the dataset's 1..1892 users, so both
runs must produce fallback rows for users without history.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_core.cli import main
from recsys_core.datasets import carve_validation, load_gowalla, load_lastfm
from recsys_core.datasets.base import DatasetFormatError, carve_pairs

DATA = Path(__file__).parent / "data"
K = 10


def _read_top(path: Path) -> dict[int, list[int]]:
    rows = {}
    for line in path.read_text().splitlines():
        ids = [int(x) for x in line.split()]
        assert ids[0] not in rows, f"user {ids[0]} listed twice"
        rows[ids[0]] = ids[1:]
    return rows


def _train_sets_gowalla(path: Path) -> dict[int, set[int]]:
    out = {}
    for line in path.read_text().splitlines():
        ids = [int(x) for x in line.split()]
        out[ids[0]] = set(ids[1:])
    return out


def test_gowalla_loader_keeps_file_ids_and_the_user_universe():
    ds = load_gowalla(DATA / "gowalla_slice")
    assert ds.n_users == 301  # user_list has user 300, who has no training line
    assert ds.interactions[300].nnz == 0
    train = _train_sets_gowalla(DATA / "gowalla_slice" / "train.txt")
    assert set(ds.interactions[7].indices) == train[7]
    assert ds.interactions.nnz == sum(len(v) for v in train.values())


def test_lastfm_loader_parses_exponent_counts_and_symmetrises_friends(tmp_path):
    (tmp_path / "listens_train.txt").write_text("1\t5\t3.2466e+05\n2\t5\t7\n2\t6\t1\n")
    (tmp_path / "friends_train.txt").write_text("1\t2\n2\t1\n3\t1\n")
    ds = load_lastfm(tmp_path)
    assert ds.n_users == 1892 and ds.n_items == 4489  # the dataset's published id universe
    assert ds.interactions[0, 4] == pytest.approx(324660.0)
    assert ds.friends.nnz == 4  # {1,2} and {1,3}, both directions, the duplicate merged
    assert (ds.friends != ds.friends.T).nnz == 0
    assert ds.user_ids[0] == 1 and ds.item_ids[4] == 5


def test_loaders_name_the_bad_line(tmp_path):
    (tmp_path / "train.txt").write_text("0 1 2\n1 x 3\n")
    with pytest.raises(DatasetFormatError, match=r"train.txt:2"):
        load_gowalla(tmp_path)
    (tmp_path / "listens_train.txt").write_text("1\t5\t3\n0\t6\t1\n")
    with pytest.raises(DatasetFormatError, match=r"listens_train.txt:2.*positive integer"):
        load_lastfm(tmp_path)


def test_carve_holds_out_a_share_of_every_user_and_keeps_one():
    ds = load_gowalla(DATA / "gowalla_slice")
    train, val = carve_validation(ds.interactions, 0.2, seed=3)
    assert train.nnz + val.nnz == ds.interactions.nnz
    assert (train.multiply(val)).nnz == 0
    counts, held = np.diff(ds.interactions.indptr), np.diff(val.indptr)
    np.testing.assert_array_equal(held, np.minimum(np.round(counts * 0.2), np.maximum(counts - 1, 0)))
    again, _ = carve_validation(ds.interactions, 0.2, seed=3)
    assert (again != train).nnz == 0  # deterministic given the seed


def test_carve_pairs_splits_undirected_friendships():
    ds = load_lastfm(DATA / "lastfm_slice")
    known, held = carve_pairs(ds.friends, 0.2, seed=0)
    assert (known + held != ds.friends).nnz == 0
    assert (known != known.T).nnz == 0 and (held != held.T).nnz == 0
    assert 0.1 < held.nnz / ds.friends.nnz < 0.3


def _run(dataset: str, out: Path) -> dict:
    code = main(
        [
            "benchmark",
            dataset,
            "--data-dir",
            str(DATA / f"{dataset}_slice"),
            "--out",
            str(out),
            "--k",
            str(K),
            "--time-budget-min",
            "0.5",
        ]
    )
    assert code == 0
    return json.loads((out / "report.json").read_text())


def _check_places(path: Path, universe: np.ndarray, train: sp.csr_matrix, item_ids: np.ndarray):
    rows = _read_top(path)
    assert sorted(rows) == universe.tolist()
    valid = set(item_ids.tolist())
    for index, user in enumerate(universe):
        items = rows[int(user)]
        assert len(items) == K and len(set(items)) == K, f"user {user}: {items}"
        assert set(items) <= valid
        seen = set(item_ids[train[index].indices].tolist())
        assert not seen & set(items), f"user {user} is recommended training items {seen & set(items)}"


PLACE_MODELS = {"place_model", "graphrec", "two_tower", "popularity", "mf_bpr", "lightgcn", "item_item_filter"}


def test_benchmark_gowalla_slice_end_to_end(tmp_path):
    """The benchmark is a product run: the asset graph on the dataset, its files from the served model."""
    report = _run("gowalla", tmp_path)
    ds = load_gowalla(DATA / "gowalla_slice")
    _check_places(tmp_path / f"places_top{K}.txt", ds.user_ids, ds.interactions, ds.item_ids)
    places = {(row["part"], row["model"]): row for row in report["places"]}
    assert {(part, model) for part in ("val", "test") for model in PLACE_MODELS} <= set(places)
    assert "oracle" not in {model for _, model in places}  # a dataset has no generator to ask
    chosen = report["place_model"]
    for part in ("validation", "test"):
        assert {"graph_filter", "ials", "graphrec", "blend"} <= set(chosen[part])
        assert sum(" + " in label for label in chosen[part]) == 3
    best_alone = max(chosen["validation"][g]["recall@20"] for g in ("graph_filter", "ials", "graphrec"))
    assert chosen["validation"]["blend"]["recall@20"] >= best_alone
    assert report["served"]["model_version"].startswith("graphrec-") and "-blend-" in report["served"]["model_version"]
    # every stage of the product ran, the last one included
    assert {"vocabulary", "all-city assets", "serving manifest"} <= set(report["stages_seconds"])
    # the run's own instance holds a servable manifest: the benchmark's model is the served one
    from recsys_core.manifest import ServingManifest, live_manifest_path
    from recsys_core.recommend.artifacts import ServingArtifacts

    manifest = ServingManifest.read(live_manifest_path(Path(report["instance"]) / "artifacts"))
    art = ServingArtifacts.load(manifest)
    assert art.place_model is not None and manifest.model_version == report["served"]["model_version"]
    assert not list(tmp_path.glob(".*.tmp")), "an atomic write left its temporary file behind"
    for written in (tmp_path / "report.json", tmp_path / f"places_top{K}.txt"):
        assert written.stat().st_mode & 0o044 == 0o044, f"{written.name} must be readable by other users"
    assert report["peak_rss_mb"] > 0 and report["config"]["k"] == K
    # user 300 of the id universe has no training line: the most popular places
    popularity = np.asarray(ds.interactions.sum(axis=0)).ravel()
    assert _read_top(tmp_path / f"places_top{K}.txt")[300][0] == int(ds.item_ids[np.argmax(popularity)])


def test_benchmark_lastfm_slice_writes_places_and_friends(tmp_path):
    report = _run("lastfm", tmp_path)
    ds = load_lastfm(DATA / "lastfm_slice")
    _check_places(tmp_path / f"places_top{K}.txt", ds.user_ids, ds.interactions, ds.item_ids)
    friends = _read_top(tmp_path / f"friends_top{K}.txt")
    assert sorted(friends) == ds.user_ids.tolist()
    for index, user in enumerate(ds.user_ids):
        recommended = friends[int(user)]
        assert len(set(recommended)) == len(recommended) and int(user) not in recommended
        assert len(recommended) >= K // 2, f"user {user}: {recommended}"
        existing = set(ds.user_ids[ds.friends[index].indices].tolist())
        assert not existing & set(recommended), f"user {user} is recommended existing friends"
        assert set(recommended) <= set(ds.user_ids.tolist())
    people = report["people_model"]
    for part in ("validation", "test"):
        assert {"people model", "common_neighbours", "adamic_adar", "ppr_0.1", "katz", "heuristic"} <= set(people[part])
    assert people["strongest_weights"] is not None


def test_benchmark_reports_a_missing_directory_as_a_cli_error(tmp_path, capsys):
    code = main(["benchmark", "gowalla", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "is not a directory" in capsys.readouterr().err
