"""The layers of docs/architecture.md hold: import-linter checks pyproject.toml's contracts over every import of
the package (function-local ones included), and a forbidden import added to a copy of the tree breaks them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("importlinter")


def _lint(package_parent: str, cwd: str) -> subprocess.CompletedProcess:
    """``lint-imports`` on the ``fxopt`` package found in ``package_parent`` with ``cwd``'s pyproject.toml."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from importlinter.cli import lint_imports_command; "
            "sys.argv = ['lint-imports', '--no-cache']; lint_imports_command()")
    return subprocess.run([sys.executable, "-c", code, package_parent], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory):
    """The package's Python files copied to ``<tmp>/fxopt`` (the checkout is the package), with pyproject."""
    parent = tmp_path_factory.mktemp("layers")
    dest = parent / "fxopt"
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "tests", "docs", "__pycache__", "*.json", "*.png", "out", "*.egg-info"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), parent / "pyproject.toml")
    return parent


def test_the_layer_contracts_are_kept(tree_copy):
    result = _lint(str(tree_copy), str(tree_copy))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("where, line, contract", [
    ("ir/shapes.py", "from fxopt.passes import registry", "fxopt.ir is not allowed to import fxopt.passes"),
    ("passes/dce.py", "from fxopt.backends import base", "fxopt.passes is not allowed to import fxopt.backends"),
    ("ir/program.py", "import fxopt.ir.capture", "fxopt.ir.program is not allowed to import fxopt.ir.capture"),
])
def test_a_forbidden_import_breaks_a_contract(tree_copy, tmp_path, where, line, contract):
    """Also when the import is inside a function (the ones that hide edges from readers)."""
    copy = tmp_path / "pkg"
    shutil.copytree(tree_copy, copy)
    path = copy / "fxopt" / where
    path.write_text(path.read_text() + f"\n\ndef _forbidden():\n    {line}  # noqa: F401\n")
    result = _lint(str(copy), str(copy))
    assert result.returncode != 0
    assert contract in " ".join(result.stdout.split()), result.stdout[-3000:]


def _local_imports_without_a_reason() -> tuple[int, list[str]]:
    """(function-local imports in the package, ``file:line`` of those without a written reason). A reason is
    ``# local: ...`` on the import's line or on a comment line just above its group of imports, or one
    ``# local imports: ...`` line at module level for a module whose local imports share one reason."""
    import ast
    import subprocess as sp

    files = sp.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:   # not a git checkout: every Python file of the package
        files = [os.path.relpath(os.path.join(d, f), ROOT) for d, _, fs in os.walk(ROOT) for f in fs
                 if f.endswith(".py")]
    total, missing = 0, []
    for rel in files:
        if rel.startswith(("tests/", "benchmarks/", ".")):
            continue
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            source = f.read()
        lines = source.splitlines()
        module_reason = any(line.startswith("# local imports:") for line in lines)
        for fn in ast.walk(ast.parse(source)):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                total += 1
                above = node.lineno - 2
                while above >= 0 and lines[above].strip().startswith(("import ", "from ")):
                    above -= 1
                if module_reason or "# local:" in lines[node.lineno - 1] or (
                        above >= 0 and lines[above].strip().startswith("# local:")):
                    continue
                missing.append(f"{rel}:{node.lineno}")
    return total, missing


def test_every_function_local_import_says_why():
    """An import inside a function hides an edge from readers and tools; it needs a written reason (import
    cost, an optional dependency, a cycle within a layer)."""
    total, missing = _local_imports_without_a_reason()
    assert total > 0
    assert missing == [], f"{len(missing)} function-local imports without '# local: <reason>': {missing[:10]}"
