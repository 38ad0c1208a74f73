"""Reloading must not take the cores from requests: one loader at a time across the workers of a
service, handing the GIL back to the request thread often while it loads."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from recsys_core.manifest import ServingManifest
from serving import state
from serving.state import LOADING_GIL_SWITCH_S, ArtifactHolder


class _Recorder:
    """Stands in for ServingArtifacts.load: records overlap and the GIL switch interval it ran with."""

    def __init__(self, seconds: float = 0.2):
        self.seconds, self.active, self.max_active = seconds, 0, 0
        self.switch_intervals: list[float] = []
        self.together: threading.Barrier | None = None  # when set, loads wait for each other
        self._lock = threading.Lock()

    def load(self, manifest):
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.switch_intervals.append(sys.getswitchinterval())
        if self.together:
            self.together.wait(timeout=10)  # BrokenBarrierError (a failed load) if they cannot overlap
        time.sleep(self.seconds)
        with self._lock:
            self.active -= 1
        return SimpleNamespace(manifest=manifest, loaded_in_s=self.seconds)


class _StubHolder(ArtifactHolder):
    """An ArtifactHolder whose manifest is always `version` (no manifest file is read)."""

    def __init__(self, path: Path, version: str):
        super().__init__(path, poll_interval_s=3600)
        self._stub_version = version

    def _read_if_changed(self, force: bool = False) -> ServingManifest | None:
        # a stand-in with the two fields the holder reads; ServingArtifacts.load is the recorder's
        stub = SimpleNamespace(version=self._stub_version, model_version=f"model-{self._stub_version}")
        return cast(ServingManifest, stub)


def _holder(path, version: str) -> ArtifactHolder:
    return _StubHolder(path, version)


@pytest.fixture
def recorder(monkeypatch) -> _Recorder:
    rec = _Recorder()
    monkeypatch.setattr(state.ServingArtifacts, "load", rec.load)
    return rec


def test_holders_of_one_manifest_load_one_at_a_time(tmp_path, recorder):
    manifest = tmp_path / "manifest.json"
    holders = [_holder(manifest, "v1") for _ in range(3)]  # as the workers of one service would
    threads = [threading.Thread(target=h.load_if_changed) for h in holders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(h.current is not None for h in holders)
    assert recorder.max_active == 1


def test_holders_of_different_manifests_do_not_wait_for_each_other(tmp_path, recorder):
    before = sys.getswitchinterval()
    holders = [_holder(tmp_path / f"m{i}.json", "v1") for i in range(2)]
    recorder.together = threading.Barrier(2)
    threads = [threading.Thread(target=h.load_if_changed) for h in holders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(h.current is not None for h in holders) and recorder.max_active == 2
    # overlapping loads: both ran with short slices, and the last one out restored the interval
    assert recorder.switch_intervals == [pytest.approx(LOADING_GIL_SWITCH_S)] * 2
    assert sys.getswitchinterval() == before


def test_a_lock_held_by_a_hung_load_is_given_up_on(tmp_path, recorder, monkeypatch):
    import fcntl
    import hashlib
    import tempfile

    manifest = tmp_path / "manifest.json"
    key = hashlib.sha1(str(manifest.resolve()).encode(), usedforsecurity=False).hexdigest()[:16]
    monkeypatch.setattr(state, "LOAD_LOCK_WAIT_S", 0.3)
    with open(Path(tempfile.gettempdir()) / f"recsys-serve-{key}.lock", "a") as hung:  # as another worker would
        fcntl.flock(hung, fcntl.LOCK_EX)
        started = time.monotonic()
        holder = _holder(manifest, "v1")
        assert holder.load_if_changed() is True and holder.current is not None
        assert 0.3 <= time.monotonic() - started < 5


def test_loading_shortens_the_gil_slices_and_restores_them(tmp_path, recorder):
    holder = _holder(tmp_path / "manifest.json", "v1")
    before = sys.getswitchinterval()
    assert asyncio.run(holder.reload()) is True
    assert recorder.switch_intervals == [pytest.approx(LOADING_GIL_SWITCH_S)]
    assert sys.getswitchinterval() == before


def test_a_holder_reloads_again_when_its_app_restarts(tmp_path, recorder):
    """The app's lifespan may run more than once (test clients do), each in its own event loop."""
    holder = _holder(tmp_path / "manifest.json", "v1")
    assert asyncio.run(holder.reload()) is True
    holder._read_if_changed = lambda force=False: SimpleNamespace(version="v2", model_version="model-v2")
    assert asyncio.run(holder.reload()) is True and holder.current.artifacts.manifest.version == "v2"
