"""What the CLI lists without compiling anything — backend names, passes with their options, default
pipelines, zoo models — as data, so ``fxopt --help``, ``fxopt passes`` and ``fxopt zoo`` answer without
importing torch (1.4 s of a 2-core machine's startup, before any pass module is read).

``catalog.json`` is generated from the live registries: ``python -m fxopt.tools.catalog --write``;
``tests/test_catalog.py`` fails, naming that command, when the file and the registries differ. In a process
that has already imported torch (a test, a notebook), :func:`current` reads the live registries instead, so
passes registered at run time are listed too.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

CATALOG_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "catalog.json")
FORMAT = 1


def build() -> dict:
    """The catalog from the live registries (imports torch and every pass): ``{"format", "backends": [name],
    "passes": [{"name", "summary", "options": [[name, type, default text]]}], "default_pipelines":
    {target: text}, "zoo": [{"name", "description"}]}``."""
    # local: the point of the catalog is that the CLI reads it without these imports
    from fxopt import zoo
    from fxopt.backends.base import backend_names
    from fxopt.passes.registry import DEFAULT_PIPELINES, get_pass_class, pass_names
    from fxopt.tools.report import class_summary, default_text, first_line

    passes = []
    for name in pass_names():
        cls = get_pass_class(name)
        passes.append({"name": name, "summary": class_summary(cls),
                       "options": [[o, t, default_text(d)] for o, t, d in cls.options()]})
    models = []
    for name in zoo.names():
        module = importlib.import_module(f"{zoo.__name__}.{name}")
        models.append({"name": name, "description": first_line(module.__doc__)})
    return {"format": FORMAT, "backends": backend_names(), "passes": passes,
            "default_pipelines": dict(sorted(DEFAULT_PIPELINES.items())), "zoo": models}


def load(path: str = CATALOG_PATH) -> dict | None:
    """The catalog saved at ``path``; None when it is missing, unreadable or of another format."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def current() -> dict:
    """The catalog the CLI shows: the live registries once torch is imported (they may hold passes
    registered at run time), else the saved file (falling back to the live registries without one)."""
    if "torch" in sys.modules:
        return build()
    return load() or build()


def write(path: str = CATALOG_PATH) -> str:
    """Write :func:`build`'s catalog to ``path``; returns the path."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(build(), f, indent=1, sort_keys=True)
        f.write("\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m fxopt.tools.catalog [--write]``: print the live catalog, or write catalog.json."""
    parser = argparse.ArgumentParser(prog="python -m fxopt.tools.catalog", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {CATALOG_PATH}")
    args = parser.parse_args(argv)
    if args.write:
        print(f"wrote {write()}")
    else:
        json.dump(build(), sys.stdout, indent=1, sort_keys=True)
        print()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

