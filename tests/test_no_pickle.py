"""No pickle anywhere in the project's own code: artifacts are tensors loaded with
`weights_only=True`, Parquet, JSON and FAISS indices, so loading a file never runs code.

The check reads the syntax tree, not the text: a comment or a docstring that mentions pickle
is fine, an import or a call is not. Flagged:

- importing `pickle`, `cPickle`, `_pickle`, `cloudpickle`, `dill` or `joblib` (any form,
  including `importlib.import_module("pickle")` and `__import__("pickle")`), and any
  attribute of those modules (`pickle.loads`);
- `torch.load(...)` without a literal `weights_only=True`;
- `numpy.load(...)` with `allow_pickle` set to anything but a literal False;
- `read_pickle` / `to_pickle` (pandas) on anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("recsys_core", "recsys_assets", "serving", "bench")
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib"}
# Conventional names, used when a file does not import them itself (so `np.load` in a
# snippet that gets numpy from elsewhere still resolves).
DEFAULT_ALIASES = {"np": "numpy", "pd": "pandas", "torch": "torch", "numpy": "numpy", "pandas": "pandas"}


def _root_module(name: str) -> str:
    return name.split(".")[0]


class _Scanner(ast.NodeVisitor):
    def __init__(self) -> None:
        self.aliases: dict[str, str] = dict(DEFAULT_ALIASES)  # local name -> dotted origin
        self.problems: list[tuple[int, str]] = []

    def flag(self, node: ast.AST, message: str) -> None:
        self.problems.append((getattr(node, "lineno", 0), message))

    # --- imports -------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if _root_module(alias.name) in PICKLING_MODULES:
                self.flag(node, f"imports {alias.name}")
            local = alias.asname or _root_module(alias.name)
            self.aliases[local] = alias.name if alias.asname else _root_module(alias.name)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            origin = f"{module}.{alias.name}" if module else alias.name
            if _root_module(module) in PICKLING_MODULES or alias.name in PICKLING_MODULES:
                self.flag(node, f"imports {origin}")
            self.aliases[alias.asname or alias.name] = origin
        self.generic_visit(node)

    # --- names and attributes ------------------------------------------------------------
    def dotted(self, node: ast.AST) -> str | None:
        """`np.load` -> "numpy.load", following the file's imports; None for anything else."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in ("read_pickle", "to_pickle"):
            self.flag(node, f".{node.attr} (pandas pickle)")
        elif isinstance(node.value, ast.Name):
            origin = self.aliases.get(node.value.id, node.value.id)
            if _root_module(origin) in PICKLING_MODULES:
                self.flag(node, f"uses {origin}.{node.attr}")
        self.generic_visit(node)

    # --- calls ---------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func)
        keywords = {k.arg: k.value for k in node.keywords if k.arg is not None}
        has_star_kwargs = any(k.arg is None for k in node.keywords)
        if name == "torch.load":
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                self.flag(
                    node, "torch.load without weights_only=True" + (" (**kwargs hides it)" if has_star_kwargs else "")
                )
        elif name == "numpy.load":
            allow = keywords.get("allow_pickle")
            if (
                allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False)
            ) or has_star_kwargs:
                self.flag(node, "numpy.load with allow_pickle not False")
        elif name in ("importlib.import_module", "__import__") and node.args:
            target = node.args[0]
            if (
                isinstance(target, ast.Constant)
                and isinstance(target.value, str)
                and _root_module(target.value) in PICKLING_MODULES
            ):
                self.flag(node, f"imports {target.value} dynamically")
        self.generic_visit(node)


def scan_source(source: str, filename: str = "<snippet>") -> list[tuple[int, str]]:
    scanner = _Scanner()
    scanner.visit(ast.parse(source, filename=filename))
    return scanner.problems


def project_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_project_source_does_not_unpickle():
    files = project_files()
    assert len(files) > 20, f"expected the project's modules under {PACKAGES}, found {len(files)}"
    problems = [
        f"{path.relative_to(ROOT)}:{line}: {message}"
        for path in files
        for line, message in scan_source(path.read_text(encoding="utf-8"), str(path))
    ]
    assert not problems, "pickle-based loading in the project's source:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "import pickle as p",
        "import joblib",
        "from joblib import load",
        "from sklearn.externals import joblib",
        "import cloudpickle",
        "from pickle import loads",
        "import importlib\nimportlib.import_module('pickle')",
        "__import__('dill')",
        "import torch\ntorch.load('m.pt')",
        "import torch\ntorch.load('m.pt', weights_only=False)",
        "import torch\nopts = {}\ntorch.load('m.pt', **opts)",
        "from torch import load\nload('m.pt')",
        "import torch as T\nT.load('m.pt', map_location='cpu')",
        "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
        "import numpy\nnumpy.load('a.npy', allow_pickle=flag)",
        "from numpy import load\nload('a.npy', allow_pickle=True)",
        "import pandas as pd\npd.read_pickle('f.pkl')",
        "df.to_pickle('f.pkl')",
    ],
)
def test_scanner_flags(snippet):
    assert scan_source(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "# import pickle; torch.load(path)\nx = 1",
        '"""Checkpoints without pickle: torch.load(path) is never called bare; no joblib."""',
        "s = 'pd.read_pickle(f)'",
        "import torch\ntorch.load('m.pt', weights_only=True)",
        "import torch\ntorch.load('m.pt', map_location='cpu', weights_only=True)",
        "import numpy as np\nnp.load('a.npy')",
        "import numpy as np\nnp.load('a.npy', allow_pickle=False)",
        "import pandas as pd\npd.read_parquet('f.parquet')",
        "import json\njson.load(f)",
        "model.load_state_dict(state)",
        "import faiss\nfaiss.read_index('i.faiss')",
    ],
)
def test_scanner_passes(snippet):
    assert not scan_source(snippet), snippet
