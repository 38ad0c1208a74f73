"""`make daemon-demo`: the schedule and sensors working under the real Dagster daemon, end to end.

Everything lives in its own directory (default `var/daemon_demo/`: its own DAGSTER_HOME,
artifacts and inbox), so a real `make demo` under `var/` is never touched. Steps:

1. materialize a small world with `recsys materialize` (the `make demo` path), recording the release
   policy for the daemon: retrains are published as the candidate of an A/B test (`--candidate-share`)
   and promoted automatically (with `--no-loop`: published live);
2. list the schedule and the sensors with Dagster's CLI;
3. start `dagster dev` (webserver + daemon) and the service (`recsys serve`) on free ports,
   and wait until the daemon is healthy and every sensor has ticked;
4. drop a valid interactions file into one city's inbox and follow it through the daemon:
   ingest -> refresh retrain -> every city's indices -> publish -> the service serves the new version;
5. drop a deliberately bad file: it is moved to `rejected/` beside a reason file, no run starts
   and nothing published or served changes;
6. the loop: simulated users use the service and post impressions, clicks and visits to
   `POST /events`; the daemon turns them into online metrics and an A/B decision, promotes the
   candidate, and carries the visits through the inbox into the next retrain and candidate;
7. write the transcript to docs/daemon_demo.md; exit 1 if any step failed.

Every subprocess is started in its own session and its whole process group is ended at exit.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import free_port

if TYPE_CHECKING:
    from dagster import DagsterInstance

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MARKER = ".daemon_demo"
SENSORS = ("interactions_inbox", "retrain_after_ingest", "indices_after_retrain", "publish_when_indices_are_fresh")
LOOP_SENSORS = ("event_days", "promote_when_decided", "feedback_to_inbox")
PROMOTED = "promote_candidate succeeded (started by promote_when_decided)"
RETRAINED = "retrain on the visits succeeded"
MAX_CONCURRENT_RUNS = 3
ENV_SHARED = ("DAGSTER_HOME", "RECSYS_ARTIFACTS", "RECSYS_INBOX", "RECSYS_EVENTS")  # this process reads them too


class StepFailed(RuntimeError):
    pass


# --------------------------------------------------------------------------- transcript


@dataclass
class Transcript:
    started: float = field(default_factory=time.monotonic)
    log: list[str] = field(default_factory=list)
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)

    def say(self, message: str) -> None:
        line = f"[{time.monotonic() - self.started:7.1f}s] {message}"
        print(line, flush=True)
        self.log.append(line)

    def section(self, title: str, body: str, lang: str = "text") -> None:
        self.sections.append(f"### {title}\n\n```{lang}\n{body.rstrip()}\n```\n")

    def milestone_recorder(self, milestones: dict[str, float], began: float, since: str):
        """mark(what): record and say the first time `what` is reached, in seconds after `since`."""

        def mark(what: str) -> None:
            if what not in milestones:
                milestones[what] = time.monotonic() - began
                self.say(f"-- {what} (+{milestones[what]:.0f}s after {since})")

        return mark

    def prose(self, title: str, body: str) -> None:
        self.sections.append(f"### {title}\n\n{body.rstrip()}\n")


def _run_step(t: Transcript, name: str, fn, *args):
    t.say(f"== {name}")
    began = time.monotonic()
    try:
        result = fn(*args)
    except Exception as exc:
        seconds = time.monotonic() - began
        t.steps.append((name, seconds, f"FAILED: {exc}"))
        t.say(f"!! {name} failed after {seconds:.0f}s: {exc}")
        if not isinstance(exc, StepFailed):
            t.say(traceback.format_exc().rstrip())
        raise
    seconds = time.monotonic() - began
    t.steps.append((name, seconds, "ok"))
    t.say(f"== {name}: ok in {seconds:.0f}s")
    return result


# --------------------------------------------------------------------------- processes


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[3]) == sid:  # fields after the command: state ppid pgrp session ...
            members.append(int(entry.name))
    return members


@dataclass
class Service:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, t: Transcript, grace_s: float = 30.0) -> None:
        """SIGTERM to the process group, SIGKILL to whatever of the session is left after the grace."""
        sid = self.popen.pid
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace_s)
        deadline = time.monotonic() + 10
        while (left := _session_members(sid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in _session_members(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)
        killed = f" after SIGKILL of {left}" if left else ""
        t.say(f"stopped {self.name} (pid {sid}, exit {self.popen.returncode}){killed}")


def start(name: str, cmd: list[str], env: dict[str, str], log_path: Path, t: Transcript) -> Service:
    with open(log_path, "w") as handle:  # the child keeps its own descriptor of the log
        popen = subprocess.Popen(  # noqa: S603 - our own commands (dagster, recsys) from this virtualenv
            cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    shown = log_path.relative_to(ROOT) if log_path.is_relative_to(ROOT) else log_path
    t.say(f"started {name}: {' '.join(cmd)} (pid {popen.pid}, log {shown})")
    return Service(name, popen, log_path)


def run_cli(cmd: list[str], env: dict[str, str], timeout: float = 600) -> str:
    out = subprocess.run(  # noqa: S603 - our own CLI commands (dagster ... list) from this virtualenv
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise StepFailed(f"{' '.join(cmd)} exited {out.returncode}: {(out.stderr or out.stdout)[-2000:]}")
    return out.stdout


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cli_listing(out: str) -> str:
    """A `dagster ... list` output without the log lines of the code server it starts and stops."""
    return "\n".join(ln for ln in ANSI.sub("", out).splitlines() if " - dagster.code_server - " not in ln)


def http_json(url: str, payload: dict | None = None, timeout: float = 10) -> tuple[int, Any]:
    """(status, decoded JSON body) of a request to one of the demo's loopback servers; (0, None) unreachable."""
    data = json.dumps(payload).encode() if payload is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - loopback URL of our own servers
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback, as above
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return 0, None


def wait_for(what: str, probe, timeout_s: float, t: Transcript, every_s: float = 2.0, services=()):
    """Call probe() until it returns something truthy; fail on timeout or when a service died."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        for service in services:
            if not service.alive():
                raise StepFailed(
                    f"{service.name} exited ({service.popen.returncode}) while waiting for {what}:\n{service.tail()}"
                )
        if time.monotonic() > deadline:
            raise StepFailed(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


# --------------------------------------------------------------------------- the demo


class Demo:
    def __init__(self, args: argparse.Namespace, t: Transcript):
        self.args, self.t = args, t
        self.work = Path(args.work_dir).resolve()
        self.home = self.work / "dagster_home"
        self.artifacts = self.work / "artifacts"
        self.inbox = self.work / "inbox"
        self.events = self.work / "events"
        self.manifest = self.artifacts / "serving" / "manifest.json"
        # With the loop, a retrain is published as the candidate of an A/B test beside live.
        self.target = "candidate" if args.loop else "live"
        self.sensors = SENSORS + (LOOP_SENSORS if args.loop else ())
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "RECSYS_ARTIFACTS": str(self.artifacts),
            "RECSYS_INBOX": str(self.inbox),
            "RECSYS_EVENTS": str(self.events),
            "PYTHONUNBUFFERED": "1",
            # One intra-op thread per process: the webserver, daemon, code server, service and runs share
            # two cores, and OpenMP threads spinning against each other only burn them.
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            # A sensor tick is a gRPC call into the code server; give a starved CPU more than the default 60 s.
            "DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS": os.environ.get("DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS", "300"),
        }
        self.services: list[Service] = []
        self.instance: DagsterInstance | None = None
        self.ui_port: int | None = None
        self.api_port: int | None = None
        # What the report says, gathered step by step (strings, counts, timings, the /version body, runs).
        self.facts: dict[str, Any] = {}

    # -- setup

    def prepare(self) -> None:
        if self.work.exists() and not self.args.reuse:
            if any(self.work.iterdir()) and not (self.work / MARKER).exists():
                raise StepFailed(f"{self.work} exists and was not made by this demo; choose another --work-dir")
            shutil.rmtree(self.work)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.work / MARKER).write_text("made by bench/daemon_demo.py; deleted by its next run\n")
        # The local defaults (SQLite, queued runs launched as subprocesses), no telemetry, patience for a
        # code server that imports torch on a busy 2-core machine (the default gives up after 180 s), and
        # at most 3 runs at once: eight cities' ingests or indices queue instead of fighting for two cores.
        (self.home / "dagster.yaml").write_text(
            "telemetry:\n  enabled: false\ncode_servers:\n  local_startup_timeout: 900\n  reload_timeout: 900\n"
            f"concurrency:\n  runs:\n    max_concurrent_runs: {MAX_CONCURRENT_RUNS}\n"
        )
        os.environ.update({k: self.env[k] for k in ENV_SHARED})
        self.t.say(f"work dir {self.work} (DAGSTER_HOME, artifacts, inbox, events); the project's var/ is not touched")

    def materialize(self) -> None:
        if self.args.reuse and self.manifest.exists():
            self.t.say(f"--reuse: keeping the materialized world ({self.manifest})")
            return
        # The settings are recorded beside the instance, so the daemon's retrain trains the same way.
        cmd = [
            str(BIN / "recsys"),
            "materialize",
            "--users",
            str(self.args.users),
            "--places",
            str(self.args.places),
            "--max-steps",
            str(self.args.max_steps),
            "--time-budget",
            str(self.args.time_budget),
            "--baseline-budget",
            str(self.args.baseline_budget),
            "--start-date",
            self.args.start_date,
        ]
        if self.args.loop:  # the daemon's retrains are A/B tested, and a `promote` decision makes them live
            cmd += ["--publish-as", "candidate", "--candidate-share", str(self.args.candidate_share), "--auto-promote"]
        log = self.work / "materialize.log"
        began = time.monotonic()
        with open(log, "w") as handle:
            code = subprocess.run(  # noqa: S603 - our own `recsys materialize` from this virtualenv
                cmd, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT
            ).returncode
        lines = [
            ln for ln in log.read_text().splitlines() if "recsys_assets.materialize" in ln or "materialized;" in ln
        ]
        self.t.section(f"`{' '.join(['recsys'] + cmd[1:])}` ({time.monotonic() - began:.0f} s)", "\n".join(lines))
        if code != 0 or not self.manifest.exists():
            raise StepFailed(f"recsys materialize exited {code}:\n" + "\n".join(log.read_text().splitlines()[-30:]))
        self.t.say(
            f"materialized {self.args.users} users / {self.args.places} places in {time.monotonic() - began:.0f}s"
        )

    def open_instance(self) -> None:
        from dagster import DagsterInstance

        self.instance = DagsterInstance.get()

    @property
    def opened(self) -> DagsterInstance:
        """The instance `open_instance` opened."""
        if self.instance is None:
            raise StepFailed("the Dagster instance is not open yet")
        return self.instance

    # -- step 2: the CLI

    def cli_listings(self, when: str) -> None:
        """`dagster schedule list` and `dagster sensor list`: one CLI call each (every call loads the
        code location, torch included), their statuses read from the listing itself."""
        dagster = str(BIN / "dagster")
        running: dict[str, list[str]] = {}
        for kind in ("schedule", "sensor"):
            cmd = [dagster, kind, "list", "-w", "workspace.yaml"]
            out = cli_listing(run_cli(cmd, self.env, timeout=300))
            self.t.section(f"`dagster {kind} list -w workspace.yaml` ({when})", out)
            self.t.say(f"dagster {kind} list ({when}):\n" + "\n".join("    " + ln for ln in out.strip().splitlines()))
            prefix = f"{kind.capitalize()}: "
            running[kind] = [
                ln[len(prefix) :].split(" [")[0]
                for ln in out.splitlines()
                if ln.startswith(prefix) and ln.rstrip().endswith("[RUNNING]")
            ]
        missing = [s for s in self.sensors if s not in running["sensor"]]
        if missing or "nightly_retrain" not in running["schedule"]:
            raise StepFailed(f"not listed as running: sensors {missing}, schedules {running['schedule']}")

    # -- step 3: the daemon and the service

    def start_dagster(self) -> None:
        self.ui_port = free_port()
        cmd = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.ui_port)]
        dagster = start("dagster dev", cmd, self.env, self.work / "dagster_dev.log", self.t)
        self.services.append(dagster)
        url = f"http://127.0.0.1:{self.ui_port}"
        wait_for(
            "the Dagster webserver", lambda: http_json(f"{url}/server_info")[0] == 200, 300, self.t, services=[dagster]
        )
        self.t.say(f"Dagster UI up at {url}")
        query = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"

        def healthy():
            status, body = http_json(f"{url}/graphql", {"query": query})
            if status != 200 or not body or "data" not in body:
                return None
            daemons = body["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
            required = {d["daemonType"]: d["healthy"] for d in daemons if d["required"]}
            return required if required and all(required.values()) else None

        daemons = wait_for(
            "every required daemon to report healthy", healthy, 300, self.t, every_s=3, services=[dagster]
        )
        self.t.say("daemons healthy (GraphQL daemonHealth): " + ", ".join(sorted(daemons)))
        self.facts["daemons"] = sorted(daemons)

        def every_sensor_ticked():
            ticks = self.sensor_ticks()
            return ticks if all(ticks.get(s) for s in self.sensors) else None

        ticks = wait_for(
            "a first tick of every sensor", every_sensor_ticked, 300, self.t, every_s=3, services=[dagster]
        )
        lines = [
            f"{name}: {tick.status.value}{' (' + tick.skip_reason + ')' if tick.skip_reason else ''}"
            for name, tick in sorted(ticks.items())
        ]
        self.t.say("first sensor ticks:\n" + "\n".join("    " + ln for ln in lines))
        self.t.section("First tick of each sensor under the daemon", "\n".join(lines))

    def start_service(self) -> None:
        self.api_port = free_port()
        cmd = [
            str(BIN / "recsys"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.api_port),
            "--manifest",
            str(self.manifest),
            "--poll-interval",
            "2",
        ]
        service = start("recsys serve", cmd, self.env, self.work / "serve.log", self.t)
        self.services.append(service)
        wait_for(
            "the service to be ready", lambda: http_json(self.api("/ready"))[0] == 200, 600, self.t, services=[service]
        )
        version = self.served()
        self.t.say(f"service ready at {self.api('')}: serving {version['version']} ({version['model_version']})")
        self.facts["served_before"] = version["version"]

    def api(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}{path}"

    def served(self) -> dict:
        status, body = http_json(self.api("/version"))
        if status != 200:
            raise StepFailed(f"/version answered {status}")
        return body

    # -- instance helpers

    def sensor_ticks(self) -> dict:
        from dagster._core.definitions.run_request import InstigatorType

        latest = {}
        for state in self.opened.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            ticks = self.opened.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
            if ticks:
                latest[state.name] = ticks[0]
        return latest

    def runs_since(self, since: dt.datetime):
        from dagster import RunsFilter

        return list(reversed(self.opened.get_run_records(filters=RunsFilter(created_after=since))))

    def manifest_version(self, which: str = "live") -> str | None:
        from recsys_core.manifest import candidate_manifest_path

        path = self.manifest if which == "live" else candidate_manifest_path(self.manifest.parent)
        try:
            return json.loads(path.read_text())["version"]
        except (OSError, ValueError, KeyError):
            return None

    def check_alive(self) -> None:
        for service in self.services:
            if not service.alive():
                raise StepFailed(f"{service.name} exited:\n{service.tail()}")

    def releases_now(self) -> tuple[str | None, str | None]:
        """(live, candidate) manifest versions on disk."""
        return self.manifest_version("live"), self.manifest_version("candidate")

    def serves(self, version: str, which: str) -> bool:
        """Does the service answer with `version` as live, or as the candidate of a running experiment?"""
        body = self.served()
        if which == "live":
            return body["version"] == version
        experiment = body.get("experiment") or {}
        return bool(experiment.get("enabled")) and experiment.get("candidate_version") == version

    def report_runs(self, since: dt.datetime, seen: dict) -> list:
        records = self.runs_since(since)
        for record in records:
            run = record.dagster_run
            status = run.status.value
            if seen.get(run.run_id) == status:
                continue
            seen[run.run_id] = status
            partition = run.tags.get("dagster/partition")
            origin = run.tags.get("dagster/sensor_name") or run.tags.get("dagster/schedule_name") or "manual"
            self.t.say(
                f"run {run.run_id[:8]} {run.job_name}{f'[{partition}]' if partition else ''} (by {origin}): {status}"
            )
            if status == "FAILURE":
                raise StepFailed(f"run {run.run_id} ({run.job_name}) failed: {self.failure_of(run.run_id)}")
        return records

    def failure_of(self, run_id: str) -> str:
        from dagster import AssetCheckEvaluation, DagsterEventType

        events = self.opened.all_logs(
            run_id,
            of_type={
                DagsterEventType.STEP_FAILURE,
                DagsterEventType.RUN_FAILURE,
                DagsterEventType.ASSET_CHECK_EVALUATION,
            },
        )
        messages = []
        for event in events:
            data = event.dagster_event.event_specific_data if event.dagster_event else None
            if event.dagster_event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                # a failed check's figures say why (markdown tables left to the UI)
                if isinstance(data, AssetCheckEvaluation) and not data.passed:
                    figures = {
                        k: getattr(v, "value", v)
                        for k, v in data.metadata.items()
                        if isinstance(getattr(v, "value", v), (int, float, str))
                        and "\n" not in str(getattr(v, "value", v))
                    }
                    messages.append(f"check {data.asset_check_key.name} failed: {figures}")
                continue
            error = getattr(data, "error", None)
            messages.append(error.message.strip() if error else event.message)
        return " | ".join(messages) or "see the run in the UI"

    # -- step 4: a valid file

    def drop_valid_file(self) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
        from dagster import AssetKey

        from recsys_assets.io_manager import load_latest_table

        city = self.args.city
        existing = load_latest_table(self.opened, AssetKey("interactions"), [city])
        places = load_latest_table(self.opened, AssetKey("places"), [city]).column("place_id").to_numpy()
        rng = np.random.default_rng(7)
        rows = existing.take(
            rng.choice(existing.num_rows, size=min(self.args.events, existing.num_rows), replace=False)
        )
        # Existing users at other places of the city, shifted by whole weeks into the last week before now:
        # the hour and weekday (and so both time buckets) stay consistent with the timestamp.
        week_us = 7 * 86_400 * 10**6
        micros = rows.column("timestamp").cast(pa.int64()).to_numpy()
        now_us = int(time.time() * 1e6)
        shift = (now_us - int(micros.max())) // week_us * week_us
        timestamps = pa.array(micros + shift, pa.int64()).cast(rows.schema.field("timestamp").type)
        new = rows.set_column(rows.schema.get_field_index("timestamp"), "timestamp", timestamps)
        new = new.set_column(
            new.schema.get_field_index("place_id"),
            "place_id",
            pa.array(rng.choice(places, size=new.num_rows), pa.int64()),
        )
        path = self.drop(
            city,
            f"new_events_{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.parquet",
            lambda p: pq.write_table(new, p),
        )
        first, last = pc.min(new.column("timestamp")).as_py(), pc.max(new.column("timestamp")).as_py()
        self.facts["good_file"] = path.name
        self.facts["good_rows"] = new.num_rows
        self.facts["existing_rows"] = existing.num_rows
        n_users = len(set(new.column("user_id").to_pylist()))
        self.t.say(
            f"dropped {path.relative_to(self.work)}: {new.num_rows} events of {n_users} "
            f"existing {city} users at other {city} places, {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC "
            f"(the city has {existing.num_rows} events)"
        )

    def drop(self, city: str, name: str, write) -> Path:
        """Write under a name the sensor ignores, then rename: the sensor never sees half a file."""
        folder = self.inbox / city
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f"{name}.part"
        write(partial)
        final = folder / name
        partial.rename(final)
        return final

    def follow_valid_file(self) -> None:
        from dagster import AssetKey

        from recsys_assets.io_manager import load_latest_table

        city, name = self.args.city, self.facts["good_file"]
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        before = self.manifest_version(self.target)
        served_before = self.facts["served_before"]
        seen: dict = {}
        milestones: dict[str, float] = {}
        began = time.monotonic()
        deadline = began + self.args.timeout

        mark = self.t.milestone_recorder(milestones, began, "the drop")

        accepted_dir = self.inbox / "accepted" / city
        while True:
            if not (self.inbox / city / name).exists() and any(accepted_dir.glob(f"*-{name}")):
                mark("the inbox sensor accepted the file (moved to accepted/)")
            if any((self.inbox / "rejected" / city).glob(f"*-{name}.reason.txt")):
                reason = next((self.inbox / "rejected" / city).glob(f"*-{name}.reason.txt")).read_text()
                raise StepFailed(f"the valid file was rejected:\n{reason}")
            records = self.report_runs(since, seen)
            done = {
                (r.dagster_run.job_name, r.dagster_run.tags.get("dagster/partition"))
                for r in records
                if r.dagster_run.status.value == "SUCCESS"
            }
            if ("ingest_interactions", city) in done:
                mark(f"ingest_interactions[{city}] succeeded")
            if any(job == "retrain" for job, _ in done):
                mark("retrain succeeded")
            indices = {p for job, p in done if job == "city_indices"}
            if len(indices) == 8:
                mark("city_indices succeeded for all 8 cities")
            if any(job == "publish_manifest" for job, _ in done):
                mark("publish_manifest succeeded")
            current = self.manifest_version(self.target)
            if current is not None and current != before:
                mark(f"new {self.target} manifest {current} written")
                if self.serves(current, self.target):
                    share = f" to {self.args.candidate_share:.0%} of users" if self.target == "candidate" else ""
                    mark(f"the service serves {current} as {self.target}{share}")
                    break
            self.check_alive()
            if time.monotonic() > deadline:
                raise StepFailed(f"timed out after {self.args.timeout:.0f}s; reached: {list(milestones) or 'nothing'}")
            time.sleep(self.args.poll)
        after = load_latest_table(self.opened, AssetKey("interactions"), [city]).num_rows
        expected = self.facts["existing_rows"] + self.facts["good_rows"]
        if after != expected:
            raise StepFailed(f"{city} interactions have {after} rows, expected {expected}")
        version, published = self.served(), self.manifest_version(self.target)
        self.facts["warm_starts"] = self.warm_starts()
        self.t.say("the retrain started from: " + "; ".join(f"{k}: {v}" for k, v in self.facts["warm_starts"].items()))
        self.facts.update(
            manifest_before=before,
            manifest_after=published,
            served_after=version,
            milestones=milestones,
            runs=self.run_rows(since),
        )
        experiment = version.get("experiment") or {}
        self.t.say(
            f"{city} interactions: {self.facts['existing_rows']} -> {after} rows; live {version['version']} "
            f"({version['model_version']}), candidate {experiment.get('candidate_version')}, "
            f"reloads={version['reloads']}"
        )
        if published in (None, served_before):
            raise StepFailed("no new version was published")

    def run_rows(self, since: dt.datetime) -> list[tuple]:
        """(run, job, partition, started by, status, start, end) of the runs created since `since`."""
        return [
            (
                r.dagster_run.run_id[:8],
                r.dagster_run.job_name,
                r.dagster_run.tags.get("dagster/partition"),
                r.dagster_run.tags.get("dagster/sensor_name", "manual"),
                r.dagster_run.status.value,
                r.start_time,
                r.end_time,
            )
            for r in self.runs_since(since)
        ]

    def warm_starts(self) -> dict[str, str]:
        """What the last retrain's GraphRec and two-tower started from (the assets' metadata)."""
        from dagster import AssetKey

        from recsys_assets.io_manager import latest_materialization

        found = {}
        for asset, key in (("trained_model", "warm_start"), ("model_evaluation", "two_tower_warm_start")):
            record = latest_materialization(self.opened, AssetKey(asset))
            value = record.asset_materialization.metadata.get(key) if record else None
            found[asset] = str(getattr(value, "value", value)) if value is not None else "not recorded"
        return found

    # -- step 5: a bad file

    def drop_and_follow_bad_file(self) -> None:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        from dagster import AssetKey

        from recsys_assets.io_manager import load_latest_table

        city = self.args.city
        rows = load_latest_table(self.opened, AssetKey("interactions"), [city]).slice(0, 4)
        users = rows.column("user_id").to_pylist()
        users[1] = 987_654_321  # no such user
        dwell = rows.column("dwell_time").to_pylist()
        dwell[2] = float("nan")
        bad = rows.set_column(0, "user_id", pa.array(users, pa.int64()))
        bad = bad.set_column(bad.schema.get_field_index("dwell_time"), "dwell_time", pa.array(dwell, pa.float32()))
        name = f"bad_events_{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.csv"
        manifest_before, served_before = self.releases_now(), self.served()["version"]
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        dropped = time.monotonic()
        path = self.drop(city, name, lambda p: pcsv.write_csv(bad, p))
        self.t.say(
            f"dropped {path.relative_to(self.work)}: 4 rows, user 987654321 does not exist, one dwell_time is NaN"
        )
        rejected = self.inbox / "rejected" / city

        def reason_file():
            found = list(rejected.glob(f"*-{name}.reason.txt"))
            return found[0] if found and not path.exists() and list(rejected.glob(f"*-{name}")) else None

        reason = wait_for(
            "the inbox sensor to reject the file",
            reason_file,
            self.args.timeout,
            self.t,
            every_s=self.args.poll,
            services=self.services,
        )
        rejected_after = round(time.monotonic() - dropped)
        self.t.say(f"rejected after {rejected_after}s: {reason.relative_to(self.work)}")
        text = reason.read_text()
        self.t.section(f"{reason.relative_to(self.work)}", text)
        for needle in ("987654321", "unknown_user", "dwell_time"):
            if needle not in text:
                raise StepFailed(f"the reason file does not mention {needle!r}:\n{text}")

        # The sensor's tick says so too, and nothing runs: wait out two more sensor intervals.
        def skip_tick():
            tick = self.sensor_ticks().get("interactions_inbox")
            return tick if tick and tick.skip_reason and name in tick.skip_reason else None

        tick = wait_for(
            "the inbox sensor's tick to name the rejection", skip_tick, 120, self.t, every_s=2, services=self.services
        )
        self.t.say(f"interactions_inbox tick {tick.status.value}: {tick.skip_reason}")
        self.facts["bad_tick"] = f"{tick.status.value}: {tick.skip_reason}"
        settle = time.monotonic() + self.args.settle
        while time.monotonic() < settle:
            time.sleep(2)
        runs = self.runs_since(since)
        if runs:
            raise StepFailed("runs started after the bad file: " + ", ".join(r.dagster_run.job_name for r in runs))
        manifest_after, served_after = self.releases_now(), self.served()["version"]
        if (manifest_after, served_after) != (manifest_before, served_before):
            raise StepFailed(
                f"something changed: manifest {manifest_before} -> {manifest_after}, "
                f"served {served_before} -> {served_after}"
            )
        self.facts.update(bad_file=name, bad_reason=reason.name, bad_wait=rejected_after)
        self.t.say(f"{self.args.settle:.0f}s later: no run started, manifest and served version still {served_after}")

    # -- step 6: the loop

    def close_the_loop(self) -> None:
        """Simulated users ask the service for places and click and visit by the generator's true
        preference (`bench.click_model`), posting what they saw and did to POST /events. Under the
        daemon, `event_days` rolls the events into Parquet and computes `online_metrics`, whose decision
        `promote_when_decided` acts on; `feedback_to_inbox` drops the visits into the inbox, where they
        are checked and ingested like any file, and the retrain that follows becomes the next candidate.
        Traffic goes on in rounds until the experiment is decided (or --rounds are spent)."""
        import numpy as np

        from bench.click_model import Users
        from recsys_assets.resources import recorded_settings
        from recsys_core.synthetic.world import generate_world

        source = recorded_settings(self.home).world
        if source is None:
            raise StepFailed(f"{self.home} has no recorded world to simulate users of")
        config = source.world_config()
        users = Users(config, generate_world(config))
        rng = np.random.default_rng(11)
        live, candidate = self.releases_now()
        if candidate is None:
            raise StepFailed("no candidate is served: nothing to A/B test")
        self.t.say(f"experiment: live {live} vs candidate {candidate} ({self.args.candidate_share:.0%} of users)")
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        began = time.monotonic()
        seen: dict = {}
        milestones: dict[str, float] = {}
        expected: dict[str, list[float]] = {}
        counts = {"requests": 0, "events": 0, "visits": 0}
        decisions: list[tuple[float, int, str, str]] = []

        mark = self.t.milestone_recorder(milestones, began, "the first event")

        def watch() -> None:
            records = self.report_runs(since, seen)
            decision = self.latest_decision()
            if decision and (not decisions or decisions[-1][2:] != decision):
                decisions.append((time.monotonic() - began, counts["events"], *decision))
                mark(f"online_metrics decided {decision[0]}")
                self.t.say(f"online_metrics: {decision[0]} ({decision[1]})")
            done = {(r.dagster_run.job_name, r.dagster_run.status.value) for r in records}
            if ("promote_candidate", "SUCCESS") in done:
                mark(PROMOTED)
            now_live = self.manifest_version("live")
            if now_live != live and now_live is not None and self.serves(now_live, "live"):
                mark(f"the service serves {now_live} as live")
                self.facts["loop_promoted"] = now_live
            if ("ingest_interactions", "SUCCESS") in done:
                mark("the visits were ingested (feedback_to_inbox -> inbox -> ingest_interactions)")
            if ("retrain", "SUCCESS") in done:
                mark(RETRAINED)
            if ("publish_manifest", "SUCCESS") in done and RETRAINED in milestones:
                mark(f"the retrain on the visits was published as {self.target} {self.manifest_version(self.target)}")

        for round_number in range(1, self.args.rounds + 1):
            if PROMOTED in milestones:  # decided and promoted while the last round settled
                break
            order = rng.permutation(len(users.user_ids))
            batch: list[dict] = []
            for row in order:
                status, body = http_json(
                    self.api(f"/recommend/places?user_id={int(users.user_ids[row])}&top_k={self.args.top_k}")
                )
                if status != 200:
                    raise StepFailed(f"/recommend/places answered {status} for user {int(users.user_ids[row])}")
                counts["requests"] += 1
                now = dt.datetime.now(dt.UTC)
                events, ctr = users.react(int(row), body, now, now, rng)  # visits stamped at the click
                if ctr is not None:
                    expected.setdefault(body["variant"], []).append(ctr)
                batch += events
                if len(batch) >= 900:
                    self.post_events(batch, counts)
                    batch = []
            self.post_events(batch, counts)
            mark(f"round {round_number}: {counts['requests']} requests, {counts['events']} events accepted")
            watch()
            if PROMOTED in milestones:
                break
            settle = time.monotonic() + self.args.round_wait
            while time.monotonic() < settle:  # let the sensors roll this round in before deciding on more
                watch()
                time.sleep(self.args.poll)
        deadline = time.monotonic() + self.args.timeout
        while not (
            PROMOTED in milestones
            and "loop_promoted" in self.facts
            and any(m.startswith("the retrain on the visits was published") for m in milestones)
        ):
            watch()
            self.check_alive()
            if time.monotonic() > deadline:
                raise StepFailed(f"timed out; reached: {list(milestones)}; decisions: {decisions}")
            time.sleep(self.args.poll)
        from recsys_core.feedback.store import EventPaths

        stored = sum(1 for _ in EventPaths(self.events).store.rglob("*.parquet"))
        self.facts.update(
            loop_live=live,
            loop_candidate=candidate,
            loop_milestones=milestones,
            loop_counts=counts,
            loop_expected={v: float(np.mean(x)) for v, x in expected.items()},
            loop_decisions=decisions,
            loop_stored_files=stored,
            loop_runs=self.run_rows(since),
        )

    def post_events(self, batch: list[dict], counts: dict[str, int]) -> None:
        if not batch:
            return
        status, body = http_json(self.api("/events"), {"events": batch}, timeout=30)
        if status != 200 or not body or body.get("accepted") != len(batch):
            raise StepFailed(f"POST /events answered {status} {body} for {len(batch)} events")
        counts["events"] += len(batch)
        counts["visits"] += sum(e["type"] == "visit" for e in batch)

    def latest_decision(self) -> tuple[str, str] | None:
        """(decision, reason) of the newest online_metrics materialization that has one."""
        from dagster import AssetKey

        from recsys_assets.io_manager import latest_materialization

        day = dt.datetime.now(dt.UTC).date().isoformat()
        record = latest_materialization(self.opened, AssetKey("online_metrics"), day)
        meta = record.asset_materialization.metadata if record else {}
        decision = meta.get("decision")
        if decision is None:
            return None
        return str(decision.value), str(getattr(meta.get("decision reason"), "value", ""))

    def stop_all(self) -> None:
        for service in reversed(self.services):
            service.stop(self.t)


# --------------------------------------------------------------------------- report


def write_report(path: Path, args: argparse.Namespace, demo: Demo, t: Transcript, ok: bool, command: str) -> None:
    f = demo.facts
    load = os.getloadavg()
    lines = [
        "# Daemon demo: schedule and sensors under the real Dagster daemon",
        "",
        f"Generated by `{command}` (`bench/daemon_demo.py`) on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. "
        f"Outcome: **{'PASSED' if ok else 'FAILED'}** in {time.monotonic() - t.started:.0f} s.",
        "",
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(the CPU was shared with other work, so timings are pessimistic). "
        f"World: {args.users} users, {args.places} places from {args.start_date}; "
        f"training: {args.max_steps} GraphRec steps for the first version (time limit {args.time_budget:.0f} s), "
        f"{args.baseline_budget:.0f} s per trained baseline, recorded for the daemon's retrains"
        + (
            f"; release policy: retrains are published as the candidate of an A/B test for "
            f"{args.candidate_share:.0%} of users and promoted automatically. The first version is deliberately "
            "under-trained: the refresh retrain continues it, so the candidate is truly better and the A/B test has "
            "something to find. "
            if args.loop
            else "; retrains are published live. "
        )
        + f"Everything under `{demo.work.relative_to(ROOT) if demo.work.is_relative_to(ROOT) else demo.work}/` "
        "(its own `DAGSTER_HOME`, `RECSYS_ARTIFACTS`, `RECSYS_INBOX` and `RECSYS_EVENTS`).",
        "",
        "## Steps",
        "",
        "| step | seconds | result |",
        "|---|---:|---|",
        *[
            f"| {name} | {seconds:.0f} | {result.splitlines()[0][:160] if result else ''} |"
            for name, seconds, result in t.steps
        ],
        "",
    ]
    if f.get("milestones"):
        lines += [
            "## A valid file, from the inbox to the service",
            "",
            f"`{f['good_file']}` ({f['good_rows']} events) dropped into `inbox/{args.city}/`:",
            "",
            "| milestone | seconds after the drop |",
            "|---|---:|",
            *[f"| {what} | {seconds:.0f} |" for what, seconds in f["milestones"].items()],
            "",
        ]
        served = f["served_after"]
        experiment = served.get("experiment") or {}
        lines += [
            f"The {demo.target} manifest went from `{f['manifest_before']}` to `{f['manifest_after']}`; "
            f"the service's `/version` then said live `{served['version']}` (model `{served['model_version']}`)"
            + (
                f", candidate `{experiment.get('candidate_version')}` for {experiment.get('candidate_share', 0):.0%} "
                "of users"
                if experiment.get("enabled")
                else ""
            )
            + f"; hot reloads: {served['reloads']}.",
            "",
        ]
        lines += [
            "The retrain started from: "
            + "; ".join(f"`{asset}`: {value}" for asset, value in f.get("warm_starts", {}).items()),
            "",
            "Runs the daemon started:",
            "",
            "| run | job | partition | started by | status | seconds |",
            "|---|---|---|---|---|---:|",
        ]
        for run_id, job, partition, origin, status, start, end in f["runs"]:
            seconds = f"{end - start:.0f}" if start and end else ""
            lines.append(f"| {run_id} | {job} | {partition or ''} | {origin} | {status} | {seconds} |")
        lines.append("")
    if f.get("bad_file"):
        lines += [
            "## A bad file is rejected with its reason",
            "",
            f"`{f['bad_file']}` (an unknown user id and a NaN `dwell_time`) was moved to "
            f"`inbox/rejected/{args.city}/` after {f['bad_wait']} s, beside `{f['bad_reason']}` (below). "
            f"The sensor's tick: `{f['bad_tick']}`. No run started and the served version stayed "
            f"`{f.get('manifest_after', '')}`.",
            "",
        ]
    if f.get("loop_milestones"):
        counts, expected = f["loop_counts"], f["loop_expected"]
        lines += [
            "## The loop: events, the A/B decision, promotion, and the visits back into training",
            "",
            f"Live `{f['loop_live']}` against candidate `{f['loop_candidate']}` "
            f"({args.candidate_share:.0%} of users by a hash of the user id). Simulated users (`bench/click_model.py`: "
            "position and the generator's true preference) asked `/recommend/places` "
            f"{counts['requests']} times and posted {counts['events']} events ({counts['visits']} visits) to "
            f"`POST /events`; {f['loop_stored_files']} Parquet files reached the event store. Expected CTR@"
            f"{args.top_k} under the click model (the truth, free of click noise): "
            + ", ".join(f"`{v}` {x:.4f}" for v, x in sorted(expected.items()))
            + f". Live after the loop: `{f.get('loop_promoted', '')}`.",
            "",
            "| milestone | seconds after the first event |",
            "|---|---:|",
            *[f"| {what} | {seconds:.0f} |" for what, seconds in f["loop_milestones"].items()],
            "",
            "Decisions of `online_metrics` as they changed:",
            "",
            "| seconds | events posted by then | decision | reason |",
            "|---:|---:|---|---|",
            *[f"| {at:.0f} | {n} | {d} | {why.replace('|', '/')} |" for at, n, d, why in f["loop_decisions"]],
            "",
            "Runs the daemon started in the loop:",
            "",
            "| run | job | partition | started by | status | seconds |",
            "|---|---|---|---|---|---:|",
            *[
                f"| {run_id} | {job} | {partition or ''} | {origin} | {status} | "
                f"{f'{end - start:.0f}' if start and end else ''} |"
                for run_id, job, partition, origin, status, start, end in f["loop_runs"]
            ],
            "",
        ]
    lines += ["## Listings and files", "", *t.sections, "## Progress log", "", "```text", *t.log, "```", ""]
    path.write_text("\n".join(lines))
    print(f"transcript written to {path}")


def _weeks_ago(weeks: int) -> str:
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(weeks=weeks)).isoformat()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--users",
        type=int,
        default=2500,
        help="users (and --places): large enough for a steady quality gate, which on 800 users compares "
        "friend ROC-AUCs on ~150 held-out pairs and passes or fails by chance",
    )
    parser.add_argument("--places", type=int, default=2500)
    parser.add_argument(
        "--max-steps",
        type=int,
        default=5,
        help="GraphRec training steps of the first version (and of a full retrain). Few on purpose: the refresh "
        "retrain after new data continues it for TrainingSettings.refresh_steps, so the candidate is truly better "
        "and the A/B test has something to find (the report gives both versions' expected CTR)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=3600,
        help="training time limit; high, so the step count decides and a busy CPU cannot fail the gate",
    )
    parser.add_argument("--baseline-budget", type=float, default=30, help="seconds per trained baseline")
    parser.add_argument(
        "--start-date",
        default=_weeks_ago(13),
        help="the world's first day (default: 13 weeks ago, so its 12 weeks end in the week before the "
        "dropped events, which then fall in the time split's test window and the retrain warm-starts)",
    )
    parser.add_argument("--city", default="zurich", help="the city whose inbox gets the files")
    parser.add_argument("--events", type=int, default=300, help="events in the valid file")
    parser.add_argument("--work-dir", default=str(ROOT / "var" / "daemon_demo"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "daemon_demo.md"), help="the markdown transcript")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for a file to reach the service")
    parser.add_argument("--settle", type=float, default=45, help="seconds to watch for runs after the bad file")
    parser.add_argument("--poll", type=float, default=3)
    parser.add_argument("--reuse", action="store_true", help="keep an earlier demo's materialized world")
    parser.add_argument(
        "--loop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="publish retrains as A/B candidates with automatic promotion, and close the loop with simulated "
        "users (--no-loop: retrains go live, as `make demo` sets it up)",
    )
    parser.add_argument(
        "--candidate-share", type=float, default=0.5, help="users the experiment sends to the candidate"
    )
    parser.add_argument("--rounds", type=int, default=6, help="at most this many rounds of traffic (every user once)")
    parser.add_argument("--round-wait", type=float, default=60, help="seconds the sensors get after each round")
    parser.add_argument("--top-k", type=int, default=10, help="places per simulated request (impressions)")
    args = parser.parse_args(argv)
    command = (
        "make daemon-demo"
        if os.environ.get("MAKELEVEL")
        else "python -m bench.daemon_demo " + " ".join(argv or sys.argv[1:])
    )

    t = Transcript()
    demo = Demo(args, t)
    ok = False
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        _run_step(t, "prepare the demo directory", demo.prepare)
        _run_step(t, "materialize a small world (recsys materialize)", demo.materialize)
        demo.open_instance()
        _run_step(
            t, "list the schedule and sensors (dagster CLI, before the daemon)", demo.cli_listings, "before the daemon"
        )
        _run_step(t, "start dagster dev (webserver + daemon); every sensor ticks", demo.start_dagster)
        _run_step(t, "start the service (recsys serve)", demo.start_service)
        _run_step(t, "list the schedule and sensors (dagster CLI, daemon running)", demo.cli_listings, "daemon running")
        _run_step(t, f"drop a valid file into inbox/{args.city}/", demo.drop_valid_file)
        _run_step(t, "valid file -> ingest -> retrain -> indices -> publish -> served", demo.follow_valid_file)
        _run_step(t, "a bad file is rejected with its reason; nothing changes", demo.drop_and_follow_bad_file)
        if args.loop:
            _run_step(
                t, "the loop: events -> online metrics -> promote; visits -> ingest -> retrain", demo.close_the_loop
            )
        ok = True
    except (Exception, KeyboardInterrupt) as exc:
        t.say(f"demo FAILED: {exc!r}"[:4000])
        for service in demo.services:
            t.section(f"last lines of {service.log_path.name}", service.tail(60))
    finally:
        demo.stop_all()
        if demo.instance is not None:
            demo.instance.dispose()
        signal.signal(signal.SIGTERM, previous)
        write_report(Path(args.out), args, demo, t, ok, command)
    t.say("PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
