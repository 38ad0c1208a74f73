"""Security settings of the service: the admin token (POST /admin/reload is off without one),
CORS origins from configuration (none by default), and the settings read from the environment."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from litestar.testing import TestClient

from recsys_core.manifest import ArtifactRef, ServingManifest
from serving.app import create_app
from serving.config import ServiceSettings

TOKEN = "s3cret-admin-token-for-tests"
ABSENT = Path("/nonexistent/serving/manifest.json")  # these tests need no artifacts unless they say so


def _app(settings: ServiceSettings, manifest: Path = ABSENT):
    return TestClient(app=create_app(manifest, poll_interval_s=3600, settings=settings))


# --------------------------------------------------------------------------- admin token


def test_admin_endpoints_are_disabled_without_a_token():
    with _app(ServiceSettings()) as c:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer "}):
            response = c.post("/admin/reload", headers=headers)
            assert response.status_code == 403
            assert "disabled" in response.json()["detail"] and "RECSYS_ADMIN_TOKEN" in response.json()["detail"]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        TOKEN,  # no scheme
        f"Basic {TOKEN}",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN.upper()}",
        "Bearer",
        "Bearer ünïcödé".encode(),  # non-ASCII header bytes: a 401, not a 500
    ],
)
def test_admin_reload_rejects_a_missing_or_wrong_token(authorization):
    with _app(ServiceSettings(admin_token=TOKEN)) as c:
        response = c.post("/admin/reload", headers={} if authorization is None else {"Authorization": authorization})
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert "admin token" in response.json()["detail"]
        assert TOKEN not in response.text


def test_admin_reload_accepts_the_token_and_reports_the_state():
    with _app(ServiceSettings(admin_token=TOKEN)) as c:
        for scheme in ("Bearer", "bearer"):
            response = c.post("/admin/reload", headers={"Authorization": f"{scheme} {TOKEN}"})
            assert response.status_code == 200, response.text
            body = response.json()
            assert (
                body["reloaded"] is False
                and body["version"] is None
                and "no serving manifest" in body["last_reload_error"]
            )
        assert c.get("/admin/reload").status_code == 405  # POST only


def test_the_admin_token_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", TOKEN)
    with TestClient(app=create_app(ABSENT, poll_interval_s=3600)) as c:
        assert c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.post("/admin/reload").status_code == 401
    monkeypatch.delenv("RECSYS_ADMIN_TOKEN")
    with TestClient(app=create_app(ABSENT, poll_interval_s=3600)) as c:
        assert c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 403


def test_the_admin_endpoint_is_documented_with_its_security_scheme():
    with _app(ServiceSettings()) as c:
        schema = c.get("/schema/openapi.json").json()
    operation = schema["paths"]["/admin/reload"]["post"]
    assert operation["security"] == [{"adminToken": []}]
    assert {"200", "401", "403"} <= set(operation["responses"])
    assert schema["components"]["securitySchemes"]["adminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "RECSYS_ADMIN_TOKEN; admin endpoints are off without one",
    }


def _publish(source: Path, target: Path, version: str, **changes) -> None:
    manifest = dataclasses.replace(
        ServingManifest.read(source), version=version, model_version=f"graphrec-{version}", **changes
    )
    manifest.write(target)


def test_admin_reload_serves_a_new_manifest_at_once_and_retries_one_that_failed(served_world, tmp_path):
    live = tmp_path / "manifest.json"
    _publish(served_world.manifest_path, live, "v1")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with _app(ServiceSettings(admin_token=TOKEN), live) as c:  # polls hourly: only the admin call reloads
        assert c.get("/version").json()["version"] == "v1"
        _publish(served_world.manifest_path, live, "v2")
        reloaded = c.post("/admin/reload", headers=auth).json()
        assert reloaded == {
            "reloaded": True,
            "version": "v2",
            "model_version": "graphrec-v2",
            "reloads": 1,
            "last_reload_error": None,
        }
        assert c.get("/version").json()["version"] == "v2"
        assert c.post("/admin/reload", headers=auth).json()["reloaded"] is False  # nothing new

        # v3's graph is missing when it is published: it fails and v2 keeps serving ...
        source = ServingManifest.read(served_world.manifest_path)
        copy = tmp_path / "graph"
        shutil.copytree(source.graph.directory, copy)
        graph = ArtifactRef.of_directory(copy, source.graph.file)
        copy.rename(tmp_path / "graph-not-yet")
        _publish(served_world.manifest_path, live, "v3", graph=graph)
        failed = c.post("/admin/reload", headers=auth).json()
        assert (
            failed["reloaded"] is False
            and failed["version"] == "v2"
            and "artifact file missing" in failed["last_reload_error"]
        )
        # ... and once the file is there, reloading the same manifest text again succeeds.
        (tmp_path / "graph-not-yet").rename(copy)
        retried = c.post("/admin/reload", headers=auth).json()
        assert retried["reloaded"] is True and retried["version"] == "v3" and retried["last_reload_error"] is None
        assert c.get("/version").json()["reloads"] == 2


# --------------------------------------------------------------------------- CORS


def test_no_cors_headers_by_default():
    with _app(ServiceSettings()) as c:
        plain = c.get("/health", headers={"Origin": "https://app.example.com"})
        assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
        preflight = c.options(
            "/recommend/places", headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
        )
        assert not any(h.startswith("access-control-") for h in preflight.headers)


def test_cors_allows_exactly_the_configured_origins():
    allowed = "https://app.example.com"
    with _app(ServiceSettings(cors_origins=(allowed, "http://localhost:5173"))) as c:
        ok = c.get("/health", headers={"Origin": allowed})
        assert ok.headers["access-control-allow-origin"] == allowed and "Origin" in ok.headers.get("vary", "")
        other = c.get("/health", headers={"Origin": "https://evil.example.com"})
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
        preflight = c.options(
            "/recommend/places",
            headers={
                "Origin": allowed,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == allowed
        assert set(preflight.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
        refused = c.options(
            "/recommend/places", headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in refused.headers


def test_cors_origins_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RECSYS_CORS_ORIGINS", " https://a.example.com/, http://b.example.com:8080 ,")
    settings = ServiceSettings.from_env()
    assert settings.cors_origins == ("https://a.example.com", "http://b.example.com:8080")
    with TestClient(app=create_app(ABSENT, poll_interval_s=3600)) as c:
        assert (
            c.get("/health", headers={"Origin": "http://b.example.com:8080"}).headers["access-control-allow-origin"]
            == "http://b.example.com:8080"
        )
        assert (
            "access-control-allow-origin" not in c.get("/health", headers={"Origin": "https://c.example.com"}).headers
        )


# --------------------------------------------------------------------------- settings


def test_settings_default_to_no_token_no_cors_and_small_limits():
    assert ServiceSettings.from_env({}) == ServiceSettings(
        admin_token=None, cors_origins=(), max_body_bytes=65536, max_url_bytes=4096
    )
    limits = ServiceSettings.from_env(
        {"RECSYS_MAX_BODY_BYTES": "2048", "RECSYS_MAX_URL_BYTES": " 1024 ", "RECSYS_ADMIN_TOKEN": ""}
    )
    assert (limits.max_body_bytes, limits.max_url_bytes, limits.admin_token) == (2048, 1024, None)


@pytest.mark.parametrize(
    "env, problem",
    [
        ({"RECSYS_ADMIN_TOKEN": "short"}, "RECSYS_ADMIN_TOKEN must be at least 16"),
        (
            {"RECSYS_ADMIN_TOKEN": "pässwörd-pässwörd-pässwörd"},
            "RECSYS_ADMIN_TOKEN must be at least 16 printable ASCII",
        ),
        ({"RECSYS_CORS_ORIGINS": "app.example.com"}, "RECSYS_CORS_ORIGINS"),
        ({"RECSYS_CORS_ORIGINS": "https://app.example.com/path"}, "RECSYS_CORS_ORIGINS"),
        ({"RECSYS_MAX_BODY_BYTES": "64k"}, "RECSYS_MAX_BODY_BYTES must be a whole number"),
        ({"RECSYS_MAX_BODY_BYTES": "10"}, "RECSYS_MAX_BODY_BYTES must be between"),
        ({"RECSYS_MAX_URL_BYTES": "1000000"}, "RECSYS_MAX_URL_BYTES must be between"),
    ],
)
def test_bad_settings_are_refused_at_startup_naming_the_variable(env, problem):
    with pytest.raises(ValueError, match=problem):
        ServiceSettings.from_env(env)


def test_recsys_serve_refuses_bad_settings_before_starting(monkeypatch, capsys):
    from recsys_core.cli import main

    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", "short")
    assert main(["serve", "--manifest", str(ABSENT), "--port", "9"]) == 2
    assert "RECSYS_ADMIN_TOKEN must be at least 16" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, problem",
    [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--poll-interval", "0"], "--poll-interval must be positive"),
    ],
)
def test_recsys_serve_refuses_bad_process_options(args, problem, capsys):
    from recsys_core.cli import main

    assert main(["serve", "--manifest", str(ABSENT), "--port", "9", *args]) == 2
    assert problem in capsys.readouterr().err
