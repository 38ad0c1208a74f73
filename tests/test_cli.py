"""The `recsys` entry point: subcommands from entry points, sources, and errors as one line and exit 2."""

from __future__ import annotations

import pytest

from recsys_assets.resources import WorldSource, world_source_from_spec
from recsys_core.cli import main, registered_commands
from recsys_core.vocabulary import BUILTIN, Vocabulary


def test_every_subcommand_is_registered_by_the_package_that_owns_it():
    commands = registered_commands()
    assert {name: ep.value.split(":")[0] for name, ep in commands.items()} == {
        "generate": "recsys_assets.cli",
        "materialize": "recsys_assets.cli",
        "benchmark": "recsys_assets.cli",
        "serve": "serving.cli",
        "publish": "recsys_core.feedback.commands",
        "experiment": "recsys_core.feedback.commands",
    }


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("generate", "materialize", "benchmark", "serve"))


def test_an_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("frobnicate:/nowhere", "'frobnicate:/nowhere' is not a world source; supported: synthetic, parquet:DIR"),
        ("parquet:", "is not a world source"),
        ("parquet:/definitely/not/here", "/definitely/not/here is not a directory"),
        ("lightgcn:/definitely/not/here", "/definitely/not/here is not a directory"),
        ("events:/definitely/not/here.csv", "/definitely/not/here.csv is not a file"),
    ],
)
def test_a_bad_source_is_one_line_naming_it(source, message, capsys):
    assert main(["materialize", "--source", source]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recsys materialize: error:") and message in err and "\n" not in err


def test_a_bad_synthetic_world_is_one_line_naming_it(capsys):
    assert main(["materialize", "--users", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert "n_users must be at least 10 per city, got 10" in err and "\n" not in err


def test_sources_parse_into_world_sources(tmp_path):
    assert world_source_from_spec("synthetic", 800, 900, 3) == WorldSource(n_users=800, n_places=900, seed=3)
    v1 = world_source_from_spec("synthetic", 800, 900, 3, "v1")
    assert v1.world_version == "v1" and not v1.world_config().realism.enabled
    parquet = world_source_from_spec(f"parquet:{tmp_path}", 10, 20, 3)
    assert (parquet.kind, parquet.where) == ("parquet", str(tmp_path.resolve()))
    assert parquet.vocabulary() == BUILTIN  # no vocabulary.json: the built-in one
    Vocabulary(cities=("Oslo",)).save(tmp_path)
    assert parquet.vocabulary().city_slugs == ("oslo",)


def test_generate_writes_the_world_and_its_vocabulary(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path), "--users", "200", "--places", "200"]) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"users.parquet", "places.parquet", "vocabulary.json"}
    assert Vocabulary.load(tmp_path) == BUILTIN


def test_start_date_moves_the_synthetic_world_and_only_it(tmp_path, capsys):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    args = ["generate", "--out", str(tmp_path), "--users", "200", "--places", "200", "--start-date", "2026-09-09"]
    assert main(args) == 0
    first = pc.min(pq.read_table(tmp_path / "interactions.parquet").column("timestamp")).as_py()
    assert "2026-09-07" <= first.date().isoformat() < "2026-09-14"  # the world starts on that date's Monday
    source = world_source_from_spec("synthetic", 800, 900, 3, start_date="2026-09-09")
    assert source.world_config().start_date == "2026-09-09"
    assert main(["materialize", "--start-date", "9 Sept"]) == 2
    assert "start_date must be YYYY-MM-DD, got '9 Sept'" in capsys.readouterr().err
    assert main(["materialize", "--source", f"parquet:{tmp_path}", "--start-date", "2026-09-09"]) == 2
    assert "sets the synthetic world's first day" in capsys.readouterr().err
