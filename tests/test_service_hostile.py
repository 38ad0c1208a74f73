"""Hostile input: oversized bodies and URLs, huge and deeply nested lists, negative and enormous
ids, NaN and infinity, and names in other scripts get a 4xx JSON error that says what is wrong,
never a 500 or a stack trace."""

from __future__ import annotations

import json

import numpy as np
import pytest
from litestar.testing import TestClient

from recsys_core.recommend.limits import MAX_ID, MAX_LIST_ITEMS
from serving.app import create_app
from serving.config import ServiceSettings

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

LIMITS = ServiceSettings(max_body_bytes=8192, max_url_bytes=3072)


@pytest.fixture(scope="module")
def client(served_world):
    with TestClient(app=create_app(served_world.manifest_path, poll_interval_s=3600, settings=LIMITS)) as c:
        yield c


@pytest.fixture(scope="module")
def user_id(serving_artifacts) -> int:
    return int(serving_artifacts.user_ids[0])


def _error(response, status: int, field: str | None = None, mentions: str = "") -> dict:
    """The response is `status` with the JSON error body, naming `field`, without internals."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"status_code", "detail", "field"} and body["status_code"] == status
    assert body["field"] == field, body
    assert mentions.lower() in body["detail"].lower(), body
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body


def _post_raw(client, path: str, raw: bytes, **headers):
    return client.post(path, content=raw, headers={"content-type": "application/json", **headers})


# --------------------------------------------------------------------------- size limits


def test_a_body_over_the_limit_is_413_whether_announced_or_streamed(client, user_id):
    padding = " " * LIMITS.max_body_bytes
    raw = json.dumps({"user_id": user_id}).encode()[:-1] + padding.encode() + b"}"
    _error(_post_raw(client, "/recommend/places", raw), 413, mentions=f"larger than {LIMITS.max_body_bytes} bytes")
    # Without a content-length (chunked), the limit holds on the bytes actually received.
    chunks = iter([raw[:1000], raw[1000:]])
    streamed = client.post("/recommend/people", content=chunks, headers={"content-type": "application/json"})
    _error(streamed, 413, mentions="RECSYS_MAX_BODY_BYTES")
    # Just under the limit is served.
    fits = json.dumps({"user_id": user_id}).encode()[:-1] + b" " * (LIMITS.max_body_bytes - 40) + b"}"
    assert len(fits) <= LIMITS.max_body_bytes
    assert _post_raw(client, "/recommend/places", fits).status_code == 200


def test_a_url_over_the_limit_is_414_on_every_endpoint(client, user_id):
    base = f"/recommend/places?user_id={user_id}&desired_tags=jazz&pad="
    fits = base + "x" * (LIMITS.max_url_bytes - len(base))  # unknown query parameters are ignored
    assert len(fits) == LIMITS.max_url_bytes
    assert client.get(fits).status_code == 200
    too_long = fits + "x"
    _error(client.get(too_long), 414, mentions=f"longer than {LIMITS.max_url_bytes}")
    for path in ("/health", "/ready", "/version", "/recommend/people"):
        _error(client.get(f"{path}?pad={'x' * LIMITS.max_url_bytes}"), 414, mentions="RECSYS_MAX_URL_BYTES")
    # A long path matches no route: 404 before anything else looks at it.
    _error(client.get("/" + "a/" * LIMITS.max_url_bytes), 404)


def test_default_limits_are_64_kib_bodies_and_4_kib_urls(served_world, user_id):
    defaults = ServiceSettings()
    with TestClient(app=create_app(served_world.manifest_path, poll_interval_s=3600, settings=defaults)) as c:
        body = json.dumps({"user_id": user_id}).encode()[:-1] + b" " * 64 * 1024 + b"}"
        _error(_post_raw(c, "/recommend/places", body), 413, mentions="65536")
        _error(c.get(f"/recommend/places?user_id={user_id}&pad={'x' * 4096}"), 414, mentions="4096")
        assert c.get(f"/recommend/places?user_id={user_id}&top_k=5").status_code == 200


# --------------------------------------------------------------------------- lists


@pytest.mark.parametrize("field", ["desired_tags", "desired_categories"])
def test_more_than_the_list_cap_is_400_naming_the_field(client, user_id, field):
    posted = client.post("/recommend/places", json={"user_id": user_id, field: [1] * (MAX_LIST_ITEMS + 1)})
    _error(posted, 400, field, mentions=f"length <= {MAX_LIST_ITEMS}")
    # In the query, the cap counts comma-separated values as well as repeated parameters.
    query = client.get("/recommend/places", params={"user_id": user_id, field: ",".join(["1"] * (MAX_LIST_ITEMS + 1))})
    _error(query, 400, field, mentions=f"at most {MAX_LIST_ITEMS} values, got {MAX_LIST_ITEMS + 1}")
    repeated = client.get("/recommend/places", params=[("user_id", user_id)] + [(field, "1")] * (MAX_LIST_ITEMS + 1))
    _error(repeated, 400, field)


def test_the_list_cap_itself_is_accepted(client, user_id):
    every_tag = client.post("/recommend/places", json={"user_id": user_id, "desired_tags": list(range(MAX_LIST_ITEMS))})
    assert every_tag.status_code == 200
    people = client.post("/recommend/people", json={"user_id": user_id, "activity_tags": list(range(MAX_LIST_ITEMS))})
    assert people.status_code == 200


def test_deeply_nested_and_top_level_arrays_are_400(client, user_id):
    depth = 1500  # fits the body limit; past the JSON decoder's recursion limit (was a 500)
    nested = f'{{"user_id": {user_id}, "desired_tags": {"[" * depth}{"]" * depth}}}'.encode()
    _error(_post_raw(client, "/recommend/places", nested), 400, mentions="nested too deeply")
    _error(
        _post_raw(client, "/recommend/places", ("[" * depth + "]" * depth).encode()), 400, mentions="nested too deeply"
    )
    objects = ('{"a":' * 1200 + "1" + "}" * 1200).encode()
    _error(_post_raw(client, "/recommend/people", objects), 400, mentions="nested too deeply")
    shallow = f'{{"user_id": {user_id}, "desired_tags": [[["jazz"]]]}}'.encode()
    _error(_post_raw(client, "/recommend/places", shallow), 400, "desired_tags", mentions="got `array`")
    _error(_post_raw(client, "/recommend/places", b"[[1]]"), 400, mentions="request body: expected `object`")
    wide = ("[" + ",".join(["1"] * 1000) + "]").encode()
    _error(_post_raw(client, "/recommend/people", wide), 400, mentions="request body: expected `object`, got `array`")
    objects = f'{{"user_id": {user_id}, "activity_tags": [{{"a": {{"b": [1]}}}}]}}'.encode()
    _error(_post_raw(client, "/recommend/people", objects), 400, "activity_tags")


# --------------------------------------------------------------------------- ids


@pytest.mark.parametrize(
    "params, field",
    [
        ({"user_id": -1}, "user_id"),
        ({"user_id": 10**30}, "user_id"),
        ({"user_id": 2**63}, "user_id"),
        ({"user_id": MAX_ID + 1}, "user_id"),
        ({"city_id": -1}, "city_id"),
        ({"city_id": 10**30}, "city_id"),
        ({"time_slot": -1}, "time_slot"),
        ({"time_slot": 10**30}, "time_slot"),
        ({"top_k": 10**30}, "top_k"),
    ],
)
@pytest.mark.parametrize("how", ["query", "json"])
def test_negative_and_enormous_numbers_are_400_naming_the_field(client, user_id, params, field, how):
    fields = {"user_id": user_id, **params}
    response = (
        client.get("/recommend/places", params=fields)
        if how == "query"
        else client.post("/recommend/places", json=fields)
    )
    _error(response, 400, field)


@pytest.mark.parametrize("value", [-7, MAX_ID + 1, 2**63, 10**30])
def test_negative_and_enormous_place_and_vocabulary_ids_are_400(client, user_id, value):
    _error(
        client.get("/recommend/people", params={"user_id": user_id, "target_place_id": value}), 400, "target_place_id"
    )
    _error(
        client.post("/recommend/people", json={"user_id": user_id, "target_place_id": value}), 400, "target_place_id"
    )
    _error(client.post("/recommend/people", json={"user_id": user_id, "activity_tags": [value]}), 400, "activity_tags")
    _error(
        client.get("/recommend/people", params={"user_id": user_id, "activity_tags": str(value)}), 400, "activity_tags"
    )


def test_the_largest_id_is_just_unknown(client, serving_artifacts):
    biggest = MAX_ID
    assert biggest not in set(serving_artifacts.user_ids.tolist())
    _error(
        client.get("/recommend/places", params={"user_id": biggest}), 404, "user_id", mentions=f"unknown user {biggest}"
    )
    _error(client.post("/recommend/people", json={"user_id": biggest}), 404, "user_id")
    user = int(serving_artifacts.user_ids[0])
    _error(
        client.get("/recommend/people", params={"user_id": user, "target_place_id": biggest}), 404, "target_place_id"
    )


# --------------------------------------------------------------------------- NaN and infinity


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
@pytest.mark.parametrize("field", ["user_id", "top_k", "time_slot", "city_id"])
def test_nan_and_infinity_in_json_are_400(client, user_id, literal, field):
    fields = {"user_id": str(user_id), field: literal}
    raw = ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()
    body = _error(_post_raw(client, "/recommend/places", raw), 400)
    assert "malformed" in body["detail"] or "out of range" in body["detail"]


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1.5", "0x10", "1_000", "", " "])
@pytest.mark.parametrize("field", ["top_k", "time_slot", "city_id", "target_place_id"])
def test_non_integers_in_the_query_are_400_naming_the_field(client, user_id, value, field):
    response = (
        client.get("/recommend/people", params={"user_id": user_id, field: value})
        if field == "target_place_id"
        else client.get("/recommend/places", params={"user_id": user_id, field: value})
    )
    _error(response, 400, field, mentions="int")


def test_floats_where_ids_belong_are_400(client, user_id):
    _error(client.post("/recommend/places", json={"user_id": float(user_id) + 0.5}), 400, "user_id")
    _error(client.post("/recommend/places", json={"user_id": user_id, "desired_tags": [1.5]}), 400, "desired_tags")


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    "name",
    [
        "jäzz",  # a letter outside ASCII
        "²",  # a digit to str.isdigit(), not to int()
        "١٢",  # Arabic-Indic digits
        "１２",  # fullwidth digits
        "jazz\u200b",  # zero-width space
        "\u202ejazz",  # right-to-left override
        "🎷",
        "jazz\x00",
        "<script>alert(1)</script>",
        "jazz;DROP TABLE places",
        "x" * 65,
    ],
)
def test_names_outside_the_vocabulary_alphabet_are_400_naming_the_field(client, user_id, name):
    mention = "ascii" if len(name) <= 64 else ""
    _error(
        client.get("/recommend/places", params={"user_id": user_id, "desired_tags": name}), 400, "desired_tags", mention
    )
    _error(
        client.get("/recommend/people", params={"user_id": user_id, "activity_tags": name}),
        400,
        "activity_tags",
        mention,
    )
    posted = client.post("/recommend/places", json={"user_id": user_id, "desired_categories": [name]})
    body = _error(posted, 400, "desired_categories")
    assert "ascii" in body["detail"].lower() or "length" in body["detail"].lower()


def test_names_are_still_case_and_space_insensitive(client, user_id):
    plain = client.get("/recommend/places", params={"user_id": user_id, "desired_tags": "live_music", "top_k": 5})
    spaced = client.post("/recommend/places", json={"user_id": user_id, "desired_tags": [" Live Music "], "top_k": 5})
    assert plain.status_code == spaced.status_code == 200
    assert plain.json()["recommendations"] == spaced.json()["recommendations"]


@pytest.mark.parametrize(
    "raw_query",
    [
        "desired_tags=%FF%FE",
        "desired_tags=%ED%A0%80",
        "desired_tags=%",
        "desired_tags=%zz",
        "user_id=%00",
        "user_id=1%00",
    ],
)
def test_undecodable_query_bytes_are_client_errors(client, user_id, raw_query):
    response = client.get(f"/recommend/places?user_id={user_id}&{raw_query}")
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["status_code"] == response.status_code


def test_invalid_utf8_in_a_json_body_is_400(client, user_id):
    raw = b'{"user_id": %d, "desired_tags": ["\xff\xfe"]}' % user_id
    _error(_post_raw(client, "/recommend/places", raw), 400, mentions="UTF-8")  # was a 500


def test_a_body_that_is_not_json_is_a_client_error(client, user_id):
    for raw, content_type in [
        (b"user_id=1", "application/x-www-form-urlencoded"),
        (b"\x00\x01\x02", "application/octet-stream"),
        (b"", "application/json"),
        (b"null", "application/json"),
    ]:
        response = client.post("/recommend/places", content=raw, headers={"content-type": content_type})
        assert 400 <= response.status_code < 500, (raw, response.text)
        assert response.json()["status_code"] == response.status_code


def test_hostile_requests_leave_the_service_serving(client, user_id):
    # After everything above, an ordinary request still works (nothing got stuck or poisoned).
    recs = client.get("/recommend/places", params={"user_id": user_id, "top_k": 3}).json()["recommendations"]
    assert len(recs) == 3 and all(np.isfinite(r["score"]) for r in recs)
