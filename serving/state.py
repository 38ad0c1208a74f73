"""The artifacts being served, and hot reload: a newer manifest is loaded in the background
and swapped in with one reference assignment.

A request takes `holder.current` once at its start and keeps using that object, so
requests in flight finish on the version they started with; the old artifacts are freed
when the last of them returns. A manifest that fails to load (missing, truncated or changed
file, an embedding or index dimension that does not match the model, malformed JSON; any
error at all) is logged and reported by /version as `last_reload_error`, naming the artifact
and what is wrong; the current version keeps serving and /ready stays 200. Without any
manifest the service is live (/health) but not ready, and the watcher loads the first one
that appears.

Loading costs a second or two of CPU, and it must not take it from requests: the workers of one
service (`recsys serve --workers N`, each following the same manifest) load one at a time (a
file lock), so while one loads the others keep their cores for requests; and while a worker
loads, the interpreter hands the GIL back to its request thread every millisecond instead of
every 5. (A lower OS priority for the loader thread was tried and dropped: preempted while
holding the GIL, it stalled the request thread for 100-180 ms.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import fcntl
import gc
import hashlib
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from recsys_core.manifest import ManifestError, ServingManifest
from recsys_core.recommend.artifacts import ServingArtifacts
from serving import metrics

logger = logging.getLogger("serving.reload")

_LIBC = ctypes.CDLL(None)
LOADING_GIL_SWITCH_S = 0.001  # how long the loader may hold the GIL while the request thread waits
LOAD_LOCK_WAIT_S = 60.0  # a load takes seconds; a lock held longer belongs to a hung load

_slices_lock = threading.Lock()
_slices_users = 0  # loads in progress in this process (holders of different manifests may overlap)
_slices_saved = 0.0


@contextlib.contextmanager
def _short_gil_slices() -> Iterator[None]:
    """The first load in progress shortens the interval, the last one out restores it."""
    global _slices_users, _slices_saved
    with _slices_lock:
        if _slices_users == 0:
            _slices_saved = sys.getswitchinterval()
            sys.setswitchinterval(LOADING_GIL_SWITCH_S)
        _slices_users += 1
    try:
        yield
    finally:
        with _slices_lock:
            _slices_users -= 1
            if _slices_users == 0:
                sys.setswitchinterval(_slices_saved)


@contextlib.contextmanager
def _one_loader_at_a_time(manifest_path: Path) -> Iterator[None]:
    """An exclusive lock shared by every process serving this manifest (the other workers). A
    lock that stays taken (a load hung elsewhere) is given up on after LOAD_LOCK_WAIT_S."""
    key = hashlib.sha1(str(manifest_path.resolve()).encode(), usedforsecurity=False).hexdigest()[:16]
    with contextlib.ExitStack() as stack:
        try:
            lock = stack.enter_context(open(Path(tempfile.gettempdir()) / f"recsys-serve-{key}.lock", "a"))
        except OSError as exc:  # no writable temp dir: load unsynchronized rather than not at all
            logger.warning("no reload lock (%s); workers may load at the same time", exc)
            yield
            return
        deadline, locked = time.monotonic() + LOAD_LOCK_WAIT_S, False
        while not locked:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    logger.warning("reload lock still taken after %.0fs; loading anyway", LOAD_LOCK_WAIT_S)
                    break
                time.sleep(0.05)
        try:
            yield
        finally:
            if locked:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _malloc_trim() -> None:
    """Return freed heap pages to the OS (glibc), so a replaced version's memory is given back."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


@dataclass
class Served:
    artifacts: ServingArtifacts
    loaded_at: str


class ArtifactHolder:
    """`arm`: which experiment arm this holder serves (metrics label). `optional`: a manifest that
    is not there is no error, and one that goes away is unloaded (the candidate's, once it is
    promoted or withdrawn)."""

    def __init__(self, manifest_path: Path, poll_interval_s: float = 2.0, arm: str = "live", optional: bool = False):
        self.manifest_path = Path(manifest_path)
        self.poll_interval_s = poll_interval_s
        self.arm = arm
        self.optional = optional
        self.current: Served | None = None
        self.reloads = 0
        self.last_error: str | None = None
        self._seen_text: str | None = None
        self._trim_pending = False  # a swap freed a version: hand its memory back to the OS
        self._loading = threading.Lock()  # the watcher and POST /admin/reload may both ask

    def _read_if_changed(self, force: bool = False) -> ServingManifest | None:
        try:
            text = self.manifest_path.read_text()
        except FileNotFoundError:
            if self.optional:
                self._withdraw()
                return None
            self.last_error = f"no serving manifest at {self.manifest_path} yet (run `make materialize`)"
            return None
        if text == self._seen_text and not force:
            return None
        self._seen_text = text
        return ServingManifest.from_json(text)

    def _withdraw(self) -> None:
        """An optional manifest went away: stop serving it."""
        self.last_error, self._seen_text = None, None
        if self.current is not None:
            logger.info("%s manifest %s withdrawn; no longer serving %s", self.arm, self.manifest_path, self.version)
            metrics.record_version(self.arm, self._labels(self.current), None)
            self.current = None
            self._trim_pending = True

    @property
    def version(self) -> str | None:
        return self.current.artifacts.manifest.version if self.current else None

    @staticmethod
    def _labels(served: Served | None) -> tuple[str, str] | None:
        if served is None:
            return None
        return served.artifacts.manifest.version, served.artifacts.manifest.model_version

    def load_if_changed(self, force: bool = False) -> bool:
        """Blocking: load a new manifest if there is one; True when a new version is live.

        `force` re-reads a manifest whose text was already seen, so one that failed to load
        (an artifact missing at the time) is tried again; the version being served is not reloaded."""
        with self._loading:
            return self._load_if_changed(force)

    def _load_if_changed(self, force: bool) -> bool:
        try:
            manifest = self._read_if_changed(force)
            if manifest is None:
                return False
            if self.current and manifest.version == self.current.artifacts.manifest.version:
                self.last_error = None  # the live manifest names what is served again (e.g. a bad one was rolled back)
                return False
            with _one_loader_at_a_time(self.manifest_path), _short_gil_slices():
                artifacts = ServingArtifacts.load(manifest)
        except Exception as exc:  # whatever a bad manifest does, the current version keeps serving
            self.last_error = f"{type(exc).__name__}: {exc}"
            metrics.RELOADS.labels(self.arm, "failed").inc()
            logger.error(
                "serving manifest %s not loaded, keeping the current version: %s",
                self.manifest_path,
                exc,
                exc_info=not isinstance(exc, (ManifestError, OSError)),
            )
            return False
        previous = self.current
        self.current = Served(artifacts, dt.datetime.now(dt.UTC).isoformat())  # the atomic swap
        metrics.RELOADS.labels(self.arm, "ok").inc()
        metrics.record_version(self.arm, self._labels(previous), self._labels(self.current))
        replaced = previous.artifacts.manifest.version if previous else None
        # Requests in flight hold their own reference; the last one to return frees the old
        # version by reference counting (the artifacts hold no reference cycles).
        del previous
        # Loaded artifacts live until the next swap: move them out of the cyclic GC's way, so
        # collections during requests do not rescan ~100k long-lived objects (p99 spikes). No
        # unfreeze: collecting only what was created since the last freeze takes milliseconds,
        # where a full-heap collection holds the GIL (and every request) for 100-200 ms.
        gc.collect()
        gc.freeze()
        self._trim_pending = True
        self.last_error = None
        if replaced is not None:
            self.reloads += 1
        logger.info(
            "serving %s %s (%s), loaded in %.1fs%s",
            self.arm,
            manifest.version,
            manifest.model_version,
            artifacts.loaded_in_s,
            f", replacing {replaced}" if replaced else "",
        )
        return True

    async def reload(self, force: bool = False) -> bool:
        """`load_if_changed` in a worker thread, awaited without blocking the event loop."""
        return await asyncio.to_thread(self.load_if_changed, force)

    async def watch(self) -> None:
        """Poll the manifest; loading runs in a worker thread so requests keep flowing."""
        while True:
            await asyncio.sleep(self.poll_interval_s)
            if self._trim_pending:  # a poll after a swap: the old version's requests have returned
                self._trim_pending = False
                await asyncio.to_thread(_malloc_trim)
            try:
                await self.reload()
            except Exception:  # never let one bad poll end hot reload for the life of the process
                logger.exception("manifest watcher: polling %s failed", self.manifest_path)
