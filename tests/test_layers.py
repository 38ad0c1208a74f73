"""The import layers hold, and each contract really fails when its rule is broken.

`make lint` runs the same contracts (pyproject's [tool.importlinter]). Here each rule is broken on
purpose in a copy of the packages, and the linter must name the broken contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("recsys_core", "recsys_assets", "serving")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (make install)")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("layers")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def test_the_project_keeps_every_contract(pristine: Path) -> None:
    result = _lint(pristine)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        ("recsys_core/graph.py", "import dagster", "recsys_core is domain and ML"),
        ("recsys_core/explain.py", "import litestar", "recsys_core is domain and ML"),
        ("recsys_core/features.py", "import uvicorn", "recsys_core is domain and ML"),
        ("recsys_core/manifest.py", "import serving.schemas", "recsys_core is domain and ML"),
        ("recsys_core/inbox.py", "import recsys_assets.stages", "recsys_core is domain and ML"),
        ("serving/config.py", "import dagster", "serving does not depend on the orchestration"),
        ("serving/schemas.py", "import recsys_assets.resources", "serving does not depend on the orchestration"),
        ("recsys_assets/stages.py", "import serving.schemas", "the orchestration does not depend on the service"),
        ("recsys_core/model/config.py", "import recsys_core.training.config", "import one way (no cycles)"),
        ("recsys_core/evaluation/metrics.py", "import recsys_core.training.loop", "import one way (no cycles)"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    pristine: Path, tmp_path: Path, module: str, statement: str, contract: str
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(pristine, tree)
    target = tree / module
    target.write_text(target.read_text() + f"\n{statement}  # added on purpose by the test\n")
    result = _lint(tree)
    assert result.returncode != 0, f"{statement} in {module} was not caught:\n{result.stdout}"
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), result.stdout
