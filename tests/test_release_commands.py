"""`recsys publish` and `recsys experiment`: the release controls on a serving directory, and their
mistakes as one line and exit 2."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from recsys_core.cli import main
from recsys_core.feedback.experiment import read_experiment
from recsys_core.feedback.releases import ServingDirectory
from recsys_core.manifest import ArtifactRef, ServingManifest


def _manifest(tmp_path, version: str) -> ServingManifest:
    """A manifest whose one artifact file exists (so it verifies), published at a distinct time."""
    directory = tmp_path / "files" / version
    directory.mkdir(parents=True)
    (directory / "weights.bin").write_bytes(version.encode())
    ref = ArtifactRef.of_directory(directory, "weights.bin")
    return ServingManifest(
        version=version,
        created_at=dt.datetime.now(dt.UTC).isoformat(),
        model_version=f"graphrec-{version}",
        model=ref,
        graph=ref,
        user_embeddings=ref,
        place_embeddings=ref,
        place_indices={},
        user_indices={},
    )


@pytest.fixture()
def artifacts(tmp_path):
    releases = ServingDirectory(tmp_path / "artifacts" / "serving")
    for version in ("v1", "v2"):
        releases.publish(_manifest(tmp_path, version))
    releases.publish(_manifest(tmp_path, "v3"), "candidate", candidate_share=0.1)
    return tmp_path / "artifacts", releases


def test_list_pin_unpin_and_promote(artifacts, capsys):
    root, releases = artifacts
    assert main(["publish", "--artifacts", str(root), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["v1", "v2", "v3"]
    assert lines[1].endswith("live") and lines[2].endswith("candidate")
    assert main(["publish", "--artifacts", str(root), "--pin", "v1", "--reason", "v2 drops jazz"]) == 0
    assert releases.read("live").version == "v1" and releases.pin().reason == "v2 drops jazz"
    assert main(["publish", "--artifacts", str(root), "--promote"]) == 2  # refused while pinned
    assert "pinned to v1" in capsys.readouterr().err
    assert main(["publish", "--artifacts", str(root), "--unpin"]) == 0
    assert main(["publish", "--artifacts", str(root), "--promote"]) == 0
    assert releases.read("live").version == "v3" and not releases.candidate.exists()


def test_pinning_an_unknown_or_broken_version_is_one_line_and_changes_nothing(artifacts, capsys, tmp_path):
    root, releases = artifacts
    assert main(["publish", "--artifacts", str(root), "--pin", "v9"]) == 2
    assert "no published version 'v9'" in capsys.readouterr().err
    (tmp_path / "files" / "v1" / "weights.bin").write_bytes(b"changed")
    assert main(["publish", "--artifacts", str(root), "--pin", "v1"]) == 2
    assert "cannot be served again" in capsys.readouterr().err
    assert releases.read("live").version == "v2" and releases.pin() is None


def test_experiment_off_on_and_share_without_a_restart(artifacts, capsys):
    root, releases = artifacts
    assert main(["experiment", "--artifacts", str(root), "off"]) == 0
    assert not read_experiment(releases.experiment).enabled
    assert main(["experiment", "--artifacts", str(root), "share", "0.25"]) == 0
    assert main(["experiment", "--artifacts", str(root), "on"]) == 0
    experiment = read_experiment(releases.experiment)
    assert experiment.enabled and experiment.candidate_share == 0.25
    assert (experiment.live_version, experiment.candidate_version) == ("v2", "v3")
    capsys.readouterr()
    assert main(["experiment", "--artifacts", str(root), "share", "2"]) == 2
    assert "candidate_share must be between 0 and 1" in capsys.readouterr().err
    assert read_experiment(releases.experiment).candidate_share == 0.25
    assert main(["experiment", "--artifacts", str(root), "status"]) == 0
    assert json.loads(capsys.readouterr().out)["candidate_share"] == 0.25


def test_retention_keeps_the_newest_and_everything_live_candidate_or_pinned(artifacts, tmp_path):
    root, releases = artifacts
    for version in ("v4", "v5"):
        releases.publish(_manifest(tmp_path, version))
    releases.pin_version("v1")
    dropped = releases.apply_retention(keep=2)
    assert sorted(dropped) == ["v2"]  # v1 pinned (and live), v3 the candidate, v4 and v5 the newest
    assert {m.version for m in releases.versions()} == {"v1", "v3", "v4", "v5"}
    assert main(["publish", "--artifacts", str(root), "--retain", "0"]) == 2
    assert releases.read("live").version == "v1"
