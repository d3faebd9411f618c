"""PNG charts for ``fxopt bench`` (matplotlib, Agg backend, imported only when charts are drawn).

- ``throughput.png``: inferences/s vs batch size, one line per system (log-log axes);
- ``latency.png``: the latency distribution per system, one box plot panel per batch size (whiskers at
  the 1st/99th percentiles, so the p99 the table prints is the top whisker).

When matplotlib is not installed the charts are skipped with a one-line note (install the ``bench`` extra).
"""
from __future__ import annotations

# local imports: commands import torch and the compiler only when they run, so `fxopt --help` and argument errors answer without them (startup cost)
import os


def write_charts(document: dict, directory: str) -> tuple[list[str], str | None]:
    """Draw the charts of a ``bench.json`` ``document`` into ``directory``. Returns ``(paths written,
    note)``; ``note`` is a one-line reason when nothing was drawn (matplotlib missing, no results)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "charts skipped: matplotlib is not installed (pip install 'fxopt[bench]')"
    rows = document.get("results") or []
    if not rows:
        return [], "charts skipped: no results"
    systems = list(dict.fromkeys(r["system"] for r in rows))
    batches = sorted({r["batch"] for r in rows})
    paths = [_throughput(plt, document, rows, systems, directory),
             _latency(plt, document, rows, systems, batches, directory)]
    return paths, None


def _title(document: dict, what: str) -> str:
    machine = document.get("machine") or {}
    cpu = machine.get("cpu") or "CPU"
    return f"{document.get('model', 'model')}: {what}\n{cpu}, {machine.get('cores', '?')} cores, torch {machine.get('torch', '?')}"


def _throughput(plt, document: dict, rows: list[dict], systems: list[str], directory: str) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=90)
    for system in systems:
        points = sorted((r["batch"], r["throughput"]) for r in rows if r["system"] == system)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=system)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("inferences / s (batch / mean latency)")
    ax.set_title(_title(document, "throughput vs batch size"), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(directory, "throughput.png")
    fig.savefig(path)
    plt.close(fig)
    return path


def _latency(plt, document: dict, rows: list[dict], systems: list[str], batches: list[int],
             directory: str) -> str:
    fig, axes = plt.subplots(1, len(batches), figsize=(3.2 * len(batches) + 1.0, 4.2), dpi=90, squeeze=False)
    for ax, batch in zip(axes[0], batches):
        present = [r for s in systems for r in rows if r["system"] == s and r["batch"] == batch]
        ax.boxplot([r["samples_ms"] for r in present], whis=(1, 99), showfliers=True)
        ax.set_xticks(range(1, len(present) + 1))
        ax.set_xticklabels([r["system"] for r in present], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"batch {batch}", fontsize=9)
        ax.set_ylabel("latency per call (ms)")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(_title(document, "latency distribution (box: p25-p75, whiskers: p1-p99)"), fontsize=9)
    fig.tight_layout()
    path = os.path.join(directory, "latency.png")
    fig.savefig(path)
    plt.close(fig)
    return path
