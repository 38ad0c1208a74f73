"""A PostgreSQL server for tests: `postgres_dsn`, a session fixture giving a DSN to a real server.

With `$RECSYS_TEST_POSTGRES_DSN` set, that (already running) server is used as is. Otherwise a
throwaway server is started from the PostgreSQL binaries on this machine (`initdb`, `pg_ctl`
on PATH or under /usr/lib/postgresql/*/bin): a fresh data directory in a temporary directory,
trust authentication, a free port, its unix socket beside the data, durability off for speed,
and stopped and deleted when the session ends. PostgreSQL refuses to run as root, so as root
the server runs as the `postgres` system user (which the Debian `postgresql` package creates).

No PostgreSQL at all is a failure, not a skip: CI (`.ci/run`) installs it.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

DSN_ENV = "RECSYS_TEST_POSTGRES_DSN"
SERVER_USER = "postgres"  # the system user a root process runs the server as
SUPERUSER = "postgres"  # the database superuser initdb creates
DATABASE = "recsys_test"
_SEARCH_DIRS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")
_SETTINGS = {
    # A throwaway server: nothing needs to survive a crash, and it should start in a second.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "30",
    "max_wal_size": "256MB",
    "logging_collector": "off",
    "huge_pages": "off",
    "timezone": "'UTC'",
}
_INSTALL_HINT = (
    "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin; "
    "install the `postgresql` package (Debian/Ubuntu: `apt-get install postgresql`; `.ci/run` does), "
    f"or point ${DSN_ENV} at a running server"
)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", str(path))) or (0,)


def find_postgres_bin() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: PATH first, then the usual install
    locations (newest version first)."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path and shutil.which("initdb") else []
    for pattern in _SEARCH_DIRS:
        candidates.extend(sorted(Path("/").glob(pattern.lstrip("/")), key=_version_key, reverse=True))
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One throwaway server in `root` (data directory, socket, log), run by `bindir`'s binaries."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = 0
        self.as_root = os.geteuid() == 0
        self.started = False

    # A server process must not run as root: as root, its commands run as SERVER_USER.
    def _server_command(self, *args: str) -> list[str]:
        if not self.as_root:
            return list(args)
        if shutil.which("runuser"):
            return ["runuser", "-u", SERVER_USER, "--", *args]
        return ["su", SERVER_USER, "-s", "/bin/sh", "-c", " ".join(_quote(a) for a in args)]

    def _run(self, command: list[str], what: str, timeout: float = 120) -> None:
        try:
            done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.fail(f"PostgreSQL test server: {what} failed: {exc}", pytrace=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            pytest.fail(
                f"PostgreSQL test server: {what} failed (exit {done.returncode}):\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}{log}",
                pytrace=False,
            )

    def _hand_to_server_user(self) -> None:
        try:
            user = pwd.getpwnam(SERVER_USER)
        except KeyError:
            pytest.fail(
                f"PostgreSQL refuses to run as root and there is no `{SERVER_USER}` system user to run it as; "
                "install the `postgresql` package (it creates the user) or run the tests as another user",
                pytrace=False,
            )
        os.chown(self.root, user.pw_uid, user.pw_gid)

    def initdb(self) -> None:
        if self.as_root:
            self._hand_to_server_user()
        self._run(
            self._server_command(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ),
            "initdb",
        )

    def _configure(self, port: int) -> None:
        settings = {
            **_SETTINGS,
            "port": str(port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
        }
        # Appended (the last setting wins), so the file keeps its owner, the server user.
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# recsys test server\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))

    def start(self) -> None:
        for attempt in range(3):  # the free port may be taken between choosing and binding it
            self.port = _free_port()
            self._configure(self.port)
            command = self._server_command(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"
            )
            done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=90, check=False)
            if done.returncode == 0:
                self.started = True
                return
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            if "could not bind" not in log or attempt == 2:
                pytest.fail(
                    f"PostgreSQL test server: pg_ctl start failed (exit {done.returncode}):\n"
                    f"{done.stdout[-2000:]}{done.stderr[-2000:]}{log[-3000:]}",
                    pytrace=False,
                )

    def createdb(self, name: str) -> None:
        createdb = self.bindir / "createdb"
        tool = str(createdb) if createdb.is_file() else (shutil.which("createdb") or "createdb")
        self._run([tool, "-h", str(self.root), "-p", str(self.port), "-U", SUPERUSER, name], "createdb")

    def dsn(self, database: str = DATABASE) -> str:
        return f"host={self.root} port={self.port} user={SUPERUSER} dbname={database}"

    def stop(self) -> None:
        if self.started:
            command = self._server_command(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
            )
            subprocess.run(command, cwd=self.root, capture_output=True, timeout=60, check=False)
            self.started = False


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A DSN of a database on a real PostgreSQL server: `$RECSYS_TEST_POSTGRES_DSN`, or a throwaway
    server started for this session. Tests keep apart by using their own schema."""
    existing = os.environ.get(DSN_ENV, "").strip()
    if existing:
        yield existing
        return
    bindir = find_postgres_bin()
    if bindir is None:
        pytest.fail(_INSTALL_HINT, pytrace=False)
    # Not under pytest's tmp directory: as root that is closed to the server user, and unix socket
    # paths must stay short (about 100 characters).
    root = Path(tempfile.mkdtemp(prefix="recsys-pg-"))
    server = PostgresServer(bindir, root)
    try:
        server.initdb()
        server.start()
        server.createdb(DATABASE)
        yield server.dsn()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
