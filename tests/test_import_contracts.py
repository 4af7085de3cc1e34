"""The import contracts in pyproject.toml ([tool.importlinter]) hold, so pytest alone checks the layering
that `make test` checks with `lint-imports`; and the contract kinds used do catch what they are meant to."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_sliceserve_keeps_its_import_contracts():
    assert lint_imports(config_filenames=(str(ROOT / "pyproject.toml"),), no_cache=True, no_logo=True) == 0


def _package(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _lint(tmp_path: Path, monkeypatch, contract: str) -> int:
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_package = "pkg"\n\n[[tool.importlinter.contracts]]\n'
                      + textwrap.dedent(contract))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "pkg" or m.startswith("pkg.")]:
        monkeypatch.delitem(sys.modules, name)
    return lint_imports(config_filenames=(str(config),), no_cache=True, no_logo=True)


ACYCLIC = 'name = "no circles"\ntype = "acyclic_siblings"\nancestors = ["pkg"]\n'


@pytest.mark.parametrize("inside_function", [False, True])
def test_a_circle_between_two_modules_of_one_package_is_caught(tmp_path, monkeypatch, inside_function):
    """Two sibling modules deep in one subpackage, one of them importing the other only inside a function."""
    lazy = "def f():\n    from pkg.sub import a\n" if inside_function else "from pkg.sub import a\n"
    _package(tmp_path, {"__init__.py": "", "sub/__init__.py": "", "sub/a.py": "from pkg.sub import b\n",
                        "sub/b.py": lazy})
    assert _lint(tmp_path, monkeypatch, ACYCLIC) != 0


def test_sibling_modules_importing_one_way_pass(tmp_path, monkeypatch):
    _package(tmp_path, {"__init__.py": "", "sub/__init__.py": "", "sub/a.py": "from pkg.sub import b\n",
                        "sub/b.py": "X = 1\n"})
    assert _lint(tmp_path, monkeypatch, ACYCLIC) == 0


def test_an_import_from_a_higher_layer_is_caught(tmp_path, monkeypatch):
    _package(tmp_path, {"__init__.py": "", "engine.py": "from pkg import model\n",
                        "model.py": "def f():\n    from pkg import engine\n"})
    layers = 'name = "layers"\ntype = "layers"\ncontainers = ["pkg"]\nlayers = ["engine", "model"]\n'
    assert _lint(tmp_path, monkeypatch, layers) != 0
