"""Rendering for the CLI: human-readable sizes and the rich tables `fxopt run`, `fxopt passes`,
`fxopt inspect` and `fxopt zoo` print.

Everything here is pure formatting: functions take plain data (PassReports, dicts, manifests) and return
strings or rich renderables; the CLI decides where they are printed.
"""
from __future__ import annotations

# local imports: commands import torch and the compiler only when they run, so `fxopt --help` and argument errors answer without them (startup cost)
import dataclasses
import inspect as _inspect
import math
import os
from typing import Any, Iterable

from rich import box
from rich.table import Table
from rich.text import Text

_SI = ["", "k", "M", "G", "T", "P", "E"]


# ------------------------------------------------------------------------------------------ sizes
def human(value: float, unit: str) -> str:
    """``value`` with an SI prefix and ``unit``: ``human(1234567, "B") -> "1.2 MB"``; exact below 1000."""
    if value is None:
        return "?"
    value = float(value)
    sign = "-" if value < 0 else ""
    value = abs(value)
    index = 0
    while value >= 999.95 and index < len(_SI) - 1:
        value /= 1000.0
        index += 1
    if index == 0:
        text = f"{value:.0f}" if value == int(value) else f"{value:.3g}"
    elif value < 100:
        text = f"{value:.1f}"
    else:
        text = f"{value:.0f}"
    return f"{sign}{text} {_SI[index]}{unit}"


def human_flops(flops: float) -> str:
    """FLOPs as text: ``1.2 GFLOP``."""
    return human(flops, "FLOP")


def human_bytes(nbytes: float) -> str:
    """Bytes as text (decimal prefixes): ``3.4 MB``."""
    return human(nbytes, "B")


def human_count(count: float) -> str:
    """A plain count with an SI prefix: ``5.9 M``; exact below 1000."""
    return human(count, "").strip()


def human_seconds(seconds: float) -> str:
    """A duration: ``850 µs``, ``12 ms``, ``1.3 s``, ``2m05s``."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 60.0:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s"


def before_after(before: Any, after: Any, fmt=str) -> str:
    """``"a → b"`` with ``fmt`` applied to both sides; ``"a"`` alone when they are equal, and the unit
    written once when both sides share it (``"152 → 144 FLOP"``, but ``"1.2 MFLOP → 980 kFLOP"``)."""
    left, right = fmt(before), fmt(after)
    if before == after:
        return left
    if left == right and isinstance(before, (int, float)) and isinstance(after, (int, float)):
        delta = after - before
        return f"{left} ({'+' if delta > 0 else '-'}{fmt(abs(delta))})"
    lnum, _, lunit = left.partition(" ")
    rnum, _, runit = right.partition(" ")
    if lunit and lunit == runit:
        return f"{lnum} → {rnum} {lunit}"
    return f"{left} → {right}"


def first_line(text: str | None) -> str:
    """The summary of a docstring: its first paragraph joined into one line; ``""`` when there is none."""
    lines = []
    for line in _inspect.cleandoc(text or "").splitlines():
        if not line.strip():
            if lines:
                break
            continue
        lines.append(line.strip())
    return " ".join(lines)


def class_summary(cls: type) -> str:
    """First line of a class's own docstring; ``""`` for a dataclass's generated ``Name(field, ...)`` one."""
    doc = cls.__dict__.get("__doc__")
    if not doc:
        return ""
    if dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}("):
        return ""
    return first_line(doc)


# ------------------------------------------------------------------------------------------ fxopt run
def _changed_text(report) -> Text:
    if report.status == "skipped":
        return Text("skipped", style="dim")
    return Text("yes", style="bold green") if report.modified else Text("no", style="dim")


_VERIFIED_STYLE = {"ok": "green", "failed": "bold red", "off": "yellow", "unchanged": "dim"}


def pass_table(reports: Iterable[Any], title: str | None = None) -> Table:
    """A table with one row per :class:`~fxopt.passes.report.PassReport`: spec, changed?, nodes, FLOPs
    and bytes before → after, time, verification; plus a total row when there is more than one pass."""
    reports = list(reports)
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    longest = max((len(r.spec) for r in reports), default=4)
    table.add_column("pass", overflow="fold", min_width=min(max(longest, 5), 32))
    table.add_column("changed", justify="center")
    table.add_column("nodes", justify="right")
    table.add_column("FLOPs", justify="right")
    table.add_column("bytes moved", justify="right")
    table.add_column("time", justify="right")
    table.add_column("verified", justify="center")
    for r in reports:
        skipped = r.status == "skipped"
        verified = "-" if skipped or r.verified == "unchanged" else r.verified
        table.add_row(
            Text(r.spec),
            _changed_text(r),
            before_after(r.nodes_before, r.nodes_after),
            before_after(r.flops_before, r.flops_after, human_flops),
            before_after(r.bytes_before, r.bytes_after, human_bytes),
            "-" if skipped else human_seconds(r.seconds),
            Text(verified, style=_VERIFIED_STYLE.get(r.verified, "")),
        )
    if len(reports) > 1:
        first, last = reports[0], reports[-1]
        changed = sum(1 for r in reports if r.modified)
        table.add_section()
        table.add_row(
            Text("total", style="bold"), f"{changed}/{len(reports)}",
            before_after(first.nodes_before, last.nodes_after),
            before_after(first.flops_before, last.flops_after, human_flops),
            before_after(first.bytes_before, last.bytes_after, human_bytes),
            human_seconds(sum(r.seconds for r in reports)), "",
        )
    return table


def decode_line(reports: Iterable[Any]) -> str | None:
    """One line on what ``unroll`` built, from the last unroll report that built something: the steps
    unrolled, the partitions and the nodes of each graph, the graphs the backend compiles, and with a lengths
    histogram the expected steps and partition calls per request. None when no unroll built a decode loop."""
    built = [r for r in reports if r.name == "unroll" and r.details.get("variant") and r.details.get("graphs")]
    if not built:
        return None
    d = built[-1].details
    nodes = d.get("nodes_per_graph", [])
    if d["variant"] == "full":
        return (f"decode loop: {d['max_len']} steps unrolled into one graph ({nodes[0] if nodes else '?'} nodes), "
                "1 graph to compile")
    steps = d.get("steps_per_partition", [])
    each = " each" if len(set(nodes)) == 1 and len(nodes) > 1 else ""
    text = (f"decode loop: {sum(steps)} steps unrolled into {len(steps)} partitions of {_listed(steps)} steps "
            f"({_listed(nodes)} nodes{each}), {len(steps) + 2} graphs to compile (encoder, initial state and "
            "partitions)")
    expected = d.get("expected")
    if expected:
        text += (f"; expected per request from the lengths: {expected['steps']:g} steps in "
                 f"{_calls(expected['calls'])}")
        even = d.get("expected_even")
        if even:
            text += f" (even partitions of {even['partition']}: {even['steps']:g} steps, {_calls(even['calls'])})"
    return text


def buckets_line(manifest: dict) -> str | None:
    """One line on a bucketed artifact's compile count (Neuron ``buckets``/``seq_buckets``), from its
    manifest: each graph is traced once per combination of bucket sizes, a decode loop's pieces each on
    their own. None when nothing is bucketed."""
    graphs = [p.get("buckets") for p in (manifest.get("pieces") or {}).values()] or [manifest.get("buckets")]
    sizes = [list((b or {}).get("sizes", {}).values()) for b in graphs]
    bucketed = [s for s in sizes if any(len(v) > 1 for v in s)]
    if not bucketed:
        return None
    total = sum(math.prod(len(values) for values in per_symbol) for per_symbol in sizes)
    shown = "; ".join(sorted({" x ".join("/".join(map(str, v)) for v in s) for s in bucketed}))
    return (f"buckets: {len(graphs)} graph{'s' if len(graphs) != 1 else ''}, {len(bucketed)} bucketed ({shown}): "
            f"{total} traces to compile")


def _calls(count: float) -> str:
    return f"{count:g} partition call" + ("" if count == 1 else "s")


def _listed(values: list) -> str:
    """``[8, 8, 8]`` -> ``8``; otherwise the values joined by ``/``."""
    if values and len(set(values)) == 1:
        return str(values[0])
    return "/".join(str(v) for v in values)


# ------------------------------------------------------------------------------------------ fxopt passes
def default_text(value: Any) -> str:
    """An option's default as ``fxopt passes`` prints it (``(required)`` when it has none)."""
    if value is dataclasses.MISSING:
        return "(required)"
    from fxopt.passes.base import format_value  # local: pass modules import torch; listing reads the catalog

    return format_value(value)


def passes_table(entries: Iterable[dict]) -> Table:
    """A table of passes from catalog entries (``{"name", "summary", "options": [[name, type, default]]}``,
    see :mod:`fxopt.tools.catalog`): name, summary, and its options as ``name: type = default`` lines."""
    table = Table(show_lines=True)
    table.add_column("pass", no_wrap=True, style="bold")
    table.add_column("what it does", ratio=3)
    table.add_column("options (name: type = default)", ratio=2)
    for entry in entries:
        opt_text = "\n".join(f"{o}: {t} = {d}" for o, t, d in entry["options"]) or "(none)"
        table.add_row(entry["name"], Text(entry["summary"]), Text(opt_text))
    return table


# ------------------------------------------------------------------------------------------ fxopt inspect
def _shape_text(spec: dict) -> str:
    shape = spec.get("shape")
    dims = "?" if shape is None else ", ".join(str(d) for d in shape)
    return f"{spec.get('dtype')}[{dims}]"


def io_table(inputs: list[dict], outputs: list[dict]) -> Table:
    """Inputs and outputs of a program or artifact (tensor specs as in ``fxopt.backends.base.io_specs``)."""
    table = Table(title="inputs / outputs", title_justify="left")
    table.add_column("kind")
    table.add_column("name", no_wrap=True)
    table.add_column("tensor", no_wrap=True)
    for kind, specs in (("input", inputs), ("output", outputs)):
        for spec in specs:
            table.add_row(kind, Text(str(spec.get("name"))), Text(_shape_text(spec)))
    return table


def histogram_table(histogram: dict[str, int], top: int) -> Table:
    """The ``top`` most frequent ops of an op histogram, with a row for the rest when there are more."""
    items = list(histogram.items())
    total = sum(histogram.values())
    table = Table(title=f"op histogram ({len(items)} distinct ops, {total} calls)", title_justify="left")
    table.add_column("op", no_wrap=True)
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for name, count in items[:top]:
        table.add_row(Text(name), str(count), f"{100.0 * count / max(total, 1):.0f}%")
    rest = items[top:]
    if rest:
        count = sum(c for _, c in rest)
        table.add_row(Text(f"... {len(rest)} more ops", style="dim"), str(count),
                      f"{100.0 * count / max(total, 1):.0f}%")
    return table


def dynamic_dims_text(dynamic_dims: dict) -> str:
    """``"s0 = x dim 0, y dim 0; s1 = ..."`` or ``"none (all shapes static)"``."""
    if not dynamic_dims:
        return "none (all shapes static)"
    parts = []
    for sym, uses in dynamic_dims.items():
        where = ", ".join(f"{name} dim {dim}" for name, dim in uses)
        parts.append(f"{sym} = {where}")
    return "; ".join(parts)


def key_value_table(rows: Iterable[tuple[str, Any]], title: str | None = None) -> Table:
    """A borderless two-column table of ``(label, value)`` rows; values are shown as plain text."""
    table = Table(title=title, title_justify="left", show_header=False, box=None)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else Text(str(value)))
    return table


def partitions_table(directory: str, manifest: dict) -> Table:
    """The partitions of an artifact manifest: device, runtime, files (and their size on disk), steps."""
    table = Table(title="partitions", title_justify="left", show_lines=True)
    table.add_column("partition", no_wrap=True)
    table.add_column("device / runtime")
    table.add_column("files")
    table.add_column("done here")
    table.add_column("left for target")
    for part in manifest.get("partitions") or []:
        files = [str(f) for f in part.get("files") or []]
        size = 0
        shown = []
        for f in files:
            path = os.path.join(directory, f)
            if os.path.isabs(f) and not os.path.exists(f):
                # an absolute path from where the artifact was written: look for it in the artifact itself
                path = os.path.join(directory, os.path.basename(f))
            shown.append(os.path.relpath(path, directory) if os.path.exists(path) else f"{f} (missing)")
            try:
                size += os.path.getsize(path)
            except OSError:
                pass
        steps = part.get("steps") or {}
        table.add_row(
            Text(str(part.get("name", "?"))),
            Text(f"{part.get('device', '?')} / {part.get('runtime', '?')}"),
            Text("\n".join(shown) + f"\n({human_bytes(size)} in all)"),
            Text("\n".join(steps.get("done_here", [])) or "-"),
            Text("\n".join(steps.get("left_for_target", [])) or "nothing"),
        )
    return table


def placement_table(rows: Iterable[dict], title: str = "placement") -> Table:
    """One row per graph node: ``name``, ``op`` (the call target, or the node kind), ``placement`` (``cpu``
    or the accelerator), ``partition`` and ``placement_reason`` (why ``split`` put it there); missing
    values show as ``-``. ``rows``: dicts with those keys (pass-trace node records fit)."""
    table = Table(title=title, title_justify="left")
    table.add_column("node", no_wrap=True)
    table.add_column("op", no_wrap=True)
    table.add_column("placement", no_wrap=True)
    table.add_column("partition", no_wrap=True)
    table.add_column("reason")
    for row in rows:
        op = row.get("target") if row.get("op") == "call_function" and row.get("target") else row.get("op")
        table.add_row(*(Text(str(v) if v not in (None, "") else "-") for v in (
            row.get("name"), op, row.get("placement"), row.get("partition"), row.get("placement_reason"))))
    return table


def accelerator_work_text(manifest: dict) -> str | None:
    """``"5 of 6 ops, 99.2% of the FLOPs on xla"`` from an artifact manifest's ``accelerator_ops`` /
    ``total_ops`` / ``accelerator_flops_fraction``; None when the manifest has none (reference artifacts, or
    written before they were recorded)."""
    ops, total, fraction = (manifest.get(k) for k in ("accelerator_ops", "total_ops", "accelerator_flops_fraction"))
    if not isinstance(ops, int) or not isinstance(total, int) or not isinstance(fraction, (int, float)):
        return None
    return f"{ops} of {total} ops, {fraction:.1%} of the FLOPs on {manifest.get('target', 'the accelerator')}"


# ------------------------------------------------------------------------------------------ fxopt zoo
def zoo_table(entries: Iterable[tuple[str, str]]) -> Table:
    """Built-in models from ``[(name, description), ...]``, with how to use each."""
    table = Table()
    table.add_column("model", no_wrap=True, style="bold")
    table.add_column("description")
    for name, description in entries:
        table.add_row(Text(f"zoo:{name}"), Text(description or "-"))
    return table
