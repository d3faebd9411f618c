"""Packaging: every package folder in the repository is listed in pyproject.toml, so a non-editable install
(which copies only listed packages) has all of fxopt."""
from __future__ import annotations

import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_PACKAGED = {"tests", "benchmarks", "docs", "build", ".ci", ".git"}


def test_every_package_folder_is_listed():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = {"fxopt"}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d not in NOT_PACKAGED and not d.startswith((".", "__"))]
            continue
        if "__init__.py" in filenames:
            found.add("fxopt." + rel.replace(os.sep, "."))
    assert found == listed
