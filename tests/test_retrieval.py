"""Embedding export, per-city FAISS indices, the serving manifest and explanations (no web, no Dagster)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import faiss
import numpy as np
import pyarrow as pa
import pytest

from recsys_core.explain import Wishes, explain_person, explain_places, place_name
from recsys_core.features import PLACE_LAYOUT, USER_LAYOUT
from recsys_core.manifest import ArtifactRef, ManifestError, ServingManifest
from recsys_core.retrieval.embeddings import embedding_problems, place_embedding_schema, top_influences
from recsys_core.retrieval.index import CityIndex, build_city_index, recall_vs_exact
from recsys_core.taxonomy import FINE_TAGS, VIBE_TAGS, neighborhood_name
from recsys_core.vocabulary import BUILTIN


def random_vectors(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


# --------------------------------------------------------------------------- influences and embedding tables


def test_top_influences_keeps_the_heaviest_sources_per_destination_in_order():
    src = np.array([10, 11, 12, 13, 14, 15])
    dst = np.array([0, 0, 0, 0, 2, 2])
    weight = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.3])
    got = top_influences(src, dst, weight, n_dst=3, k=3)
    assert got[0].tolist() == [11, 13, 12]
    assert got[1].tolist() == []
    assert got[2].tolist() == [15, 14]


def _embedding_table(ids: np.ndarray, vectors: np.ndarray) -> pa.Table:
    flat = pa.array(vectors.ravel(), pa.float32())
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.int64()),
            pa.array(np.zeros(len(ids), np.int32)),
            pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        ],
        schema=place_embedding_schema(vectors.shape[1]),
    )


def test_embedding_problems_names_non_finite_rows_missing_and_extra_ids():
    vectors = random_vectors(5, 4)
    vectors[2, 1] = np.nan
    table = _embedding_table(np.array([1, 2, 3, 4, 9]), vectors)
    problems = embedding_problems(table, "place_id", np.array([1, 2, 3, 4, 5]), dim=4)
    text = " | ".join(problems)
    assert "1 rows with non-finite embedding values, e.g. place_id [3]" in text
    assert "1 ids without an embedding, e.g. [5]" in text
    assert "1 unexpected ids, e.g. [9]" in text
    assert embedding_problems(table, "place_id", np.array([1, 2, 3, 4, 9]), dim=8) == ["embedding width 4, expected 8"]


# --------------------------------------------------------------------------- indices


def test_small_cities_get_an_exact_index_and_large_ones_hnsw():
    vectors = random_vectors(300)
    assert build_city_index(np.arange(300), vectors, exact_max_rows=300).kind == "exact"
    assert build_city_index(np.arange(300), vectors, exact_max_rows=299).kind == "hnsw"


def test_exact_index_returns_the_brute_force_top_k_with_node_ids():
    vectors = random_vectors(200)
    ids = np.arange(200) * 7 + 1000
    index = build_city_index(ids, vectors)
    queries = random_vectors(5, seed=1)
    scores, found = index.search(queries, 10)
    expected = ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :10]]
    assert np.array_equal(found, expected)
    assert np.allclose(scores, np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, :10], atol=1e-4)


def test_hnsw_index_recall_vs_exact_is_at_least_0_99_and_a_wrong_index_fails():
    vectors = random_vectors(3000, d=64)
    index = build_city_index(np.arange(3000), vectors, exact_max_rows=1000)
    assert index.kind == "hnsw"
    queries = vectors[np.random.default_rng(2).choice(3000, 100, replace=False)]
    assert recall_vs_exact(index, vectors, queries, k=50) >= 0.99
    stale = build_city_index(np.arange(3000), random_vectors(3000, d=64, seed=5))
    assert recall_vs_exact(stale, vectors, queries, k=50) < 0.5


def test_index_round_trip_gives_identical_results_and_search_never_asks_for_more_than_exists(tmp_path):
    vectors = random_vectors(40)
    index = build_city_index(np.arange(40) + 500, vectors)
    index.save(tmp_path)
    loaded = CityIndex.load(tmp_path)
    queries = random_vectors(3, seed=3)
    assert np.array_equal(index.search(queries, 5)[1], loaded.search(queries, 5)[1])
    _, found = loaded.search(queries, 100)
    assert found.shape == (3, 40) and set(found[0].tolist()) == set(range(500, 540))


# --------------------------------------------------------------------------- manifest


def _manifest(tmp_path, version="v1") -> ServingManifest:
    files = {}
    for name in ("model", "graph", "users", "places", "pidx", "uidx"):
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        (d / "main.bin").write_bytes(name.encode() * 10)
        files[name] = ArtifactRef.of_directory(d, "main.bin")
    return ServingManifest(
        version=version,
        created_at="2026-01-01T00:00:00+00:00",
        model_version="graphrec-abc",
        model=files["model"],
        graph=files["graph"],
        user_embeddings=files["users"],
        place_embeddings=files["places"],
        place_indices={"0": files["pidx"]},
        user_indices={"0": files["uidx"]},
    )


def test_manifest_round_trips_and_is_replaced_atomically(tmp_path):
    manifest = _manifest(tmp_path)
    path = manifest.write(tmp_path / "serving" / "manifest.json")
    assert ServingManifest.read(path) == manifest
    newer = _manifest(tmp_path, "v2")
    newer.write(path)
    assert ServingManifest.read(path).version == "v2"
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]  # no temp files left behind
    ServingManifest.read(path).verify()


def test_manifest_verify_refuses_a_changed_or_missing_file(tmp_path):
    manifest = _manifest(tmp_path)
    (tmp_path / "graph" / "main.bin").write_bytes(b"tampered")
    with pytest.raises(ManifestError, match="changed since it was checked"):
        manifest.verify()
    (tmp_path / "graph" / "main.bin").unlink()
    with pytest.raises(ManifestError, match="artifact file missing"):
        manifest.verify()


def test_malformed_manifest_is_a_manifest_error_naming_the_problem(tmp_path):
    with pytest.raises(ManifestError, match="malformed"):
        ServingManifest.from_json(json.dumps({"version": "v1"}))
    with pytest.raises(ManifestError, match="cannot read"):
        ServingManifest.read(tmp_path / "absent.json")


# --------------------------------------------------------------------------- explanations


def _user(
    fine: dict[int, float],
    vibes: dict[int, float] | None = None,
    city=0,
    area: dict[int, float] | None = None,
    cats: dict[int, float] | None = None,
):
    x = np.zeros(USER_LAYOUT.width, np.float32)
    x[USER_LAYOUT["city_id"]] = city
    for block, values in (("fine_pref", fine), ("vibe_pref", vibes), ("area_freqs", area), ("cat_pref", cats)):
        for i, v in (values or {}).items():
            x[USER_LAYOUT[block].start + i] = v
    return x


def _place(tags: list[int], city=0, nbhd=3, cats: Sequence[int] = (), slot=2):
    x = np.zeros(PLACE_LAYOUT.width, np.float32)
    x[PLACE_LAYOUT["city_id"]] = city
    x[PLACE_LAYOUT["neighborhood_id"]] = nbhd
    x[PLACE_LAYOUT["typical_time_slot"]] = slot
    for t in tags:
        x[PLACE_LAYOUT["fine_tag_vector"].start + t] = 1.0 / len(tags)
    for c in cats:
        x[PLACE_LAYOUT["category_one_hot"].start + c] = 1.0
    return x


def test_place_explanation_names_shared_tags_area_and_request_faithfully():
    jazz, bouldering, techno = FINE_TAGS.index("jazz"), FINE_TAGS.index("bouldering"), FINE_TAGS.index("techno")
    user = _user({jazz: 0.3, bouldering: 0.2, techno: 0.001}, area={3: 0.6})
    place = _place([jazz, techno], nbhd=3)
    reasons = explain_places(user, place[None, :], vocabulary=BUILTIN)[0]
    assert reasons[0] == "Matches your interest in jazz"  # techno is in the place, but the user does not care for it
    assert f"In {neighborhood_name(0, 3)}, where you often go out" in reasons
    asked = explain_places(user, place[None, :], Wishes(tags=(techno,), time_slot=2), vocabulary=BUILTIN)[0]
    assert asked[0] == "Has the techno you asked for" and "evening" in asked[1]
    assert len(asked) == 3
    elsewhere = explain_places(user, _place([jazz], city=1, nbhd=3)[None, :], vocabulary=BUILTIN)[0]
    assert not any("where you often go out" in r for r in elsewhere)  # same neighbourhood id, other city


def test_person_explanation_says_what_both_share():
    jazz, hiking = FINE_TAGS.index("jazz"), FINE_TAGS.index("hiking")
    chill = VIBE_TAGS.index("chill")
    a = _user({jazz: 0.3, hiking: 0.2}, vibes={chill: 0.2}, area={5: 0.5})
    b = _user({jazz: 0.25}, vibes={chill: 0.3}, area={5: 0.4})
    reasons = explain_person(a, b, vocabulary=BUILTIN)
    assert reasons == ["You both like jazz", "You're both chill", f"You both go out in {neighborhood_name(0, 5)}"]


def test_place_name_quotes_the_strongest_tags_and_the_neighbourhood():
    jazz, wine = FINE_TAGS.index("jazz"), FINE_TAGS.index("wine_tasting")
    name = place_name(_place([jazz, wine], city=0, nbhd=3), vocabulary=BUILTIN)
    assert name in (
        f"Jazz & wine tasting · {neighborhood_name(0, 3)}",
        f"Wine tasting & jazz · {neighborhood_name(0, 3)}",
    )


@pytest.mark.usefixtures("one_intra_op_thread")
@pytest.mark.parametrize("backbone", ["gat", "sage"])
def test_exported_influences_are_the_users_own_places_with_the_heaviest_last_layer_weights(world, backbone):
    import torch

    from recsys_core.graph import INTERACTS, REV_INTERACTS, build_from_world
    from recsys_core.model.config import ModelConfig
    from recsys_core.model.graphrec import GraphRec
    from recsys_core.model.inputs import GraphInputs
    from recsys_core.retrieval.embeddings import export_embeddings

    torch.manual_seed(0)
    bundle = build_from_world(world)
    inputs = GraphInputs.from_hetero(bundle.data)
    model = GraphRec(ModelConfig(d_model=16, head_hidden=(16, 8), d_ctx=4, backbone=backbone), inputs.edge_dims())
    if backbone == "sage":  # a non-trivial gate, so the weights differ between edges
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "gate" in name:
                    p.normal_()
    tables = export_embeddings(model, bundle)
    assert tables.users.num_rows == bundle.data["user"].num_nodes
    weights = model.backbone.last_edge_weights[REV_INTERACTS].numpy()
    if backbone == "sage":
        relation = inputs.relations[REV_INTERACTS]
        src, dst = relation.src.numpy(), relation.dst.numpy()
    else:
        src, dst = inputs.edge_index[REV_INTERACTS].numpy()
    place_ids = bundle.data["place"].node_id.numpy()
    user_ids = bundle.data["user"].node_id.numpy()
    ei = bundle.data[INTERACTS].edge_index.numpy()
    influences = dict(
        zip(
            tables.users.column("user_id").to_pylist(),
            tables.users.column("influential_place_ids").to_pylist(),
            strict=True,
        )
    )
    for user in (0, 7, 100):
        mine = dst == user
        expected = place_ids[src[mine][np.argsort(-weights[mine], kind="stable")[:3]]]
        assert influences[int(user_ids[user])] == expected.tolist()
        assert set(expected) <= set(place_ids[ei[1, ei[0] == user]])  # only places the user interacted with
    assert len(np.unique(weights)) > 10


def _inner_product_hnsw(vectors: np.ndarray) -> CityIndex:
    hnsw = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction, hnsw.hnsw.efSearch = 200, 384
    hnsw.add(vectors)
    return CityIndex(hnsw, np.arange(len(vectors)))


def test_vectors_sharing_one_direction_get_the_l2_reduced_index():
    """Like Gowalla's place vectors: a strong common direction, queries from elsewhere. An
    inner-product HNSW misses a quarter of the top 50; the reduced index finds nearly all."""
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((5000, 32)).astype(np.float32)
    vectors[:, 0] += 6.0
    queries = rng.standard_normal((100, 32)).astype(np.float32)
    queries[:, 0] = 0.0
    index = build_city_index(np.arange(5000), vectors, exact_max_rows=100)
    assert index.reduced_to_l2 and index.dim == 32
    assert recall_vs_exact(_inner_product_hnsw(vectors), vectors, queries) < 0.8
    assert recall_vs_exact(index, vectors, queries) >= 0.98
    scores, ids = index.search(queries[:4], 10)  # the reduced index still answers in inner products
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries[:4], vectors[ids]), rtol=1e-4, atol=1e-3)


def test_vectors_of_spread_lengths_keep_the_inner_product_index():
    """Where lengths spread widely the reduction is the worse one: the inner-product graph stays."""
    rng = np.random.default_rng(1)
    vectors = (rng.standard_normal((4000, 32)) * rng.lognormal(0, 0.6, (4000, 1))).astype(np.float32)
    index = build_city_index(np.arange(4000), vectors, exact_max_rows=100)
    assert index.kind == "hnsw" and not index.reduced_to_l2
    assert recall_vs_exact(index, vectors, rng.standard_normal((100, 32)).astype(np.float32)) >= 0.99
