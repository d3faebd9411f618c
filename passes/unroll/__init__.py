"""The ``unroll`` pass: a decode loop fully unrolled into one graph, or unrolled into partitions with early
stop at partition boundaries (boundaries even, explicit, or chosen from a histogram of output lengths).

Input: a Program with a decode-loop region (``fxopt.ir.capture.decoder.capture_decoder``). The pass rebuilds the
program's graph from the region's captured pieces (``encode``, ``init_state``, ``step``), so it can switch
between variants; a program without such a region is left untouched (``modified=False`` with a note).

- ``unroll{mode=full}``: one flat graph: encoder, init_state and ``max_len`` inlined steps with exact
  per-step shapes (step t attends over t cache positions; caches grow by concatenation, no padding); no early
  stop; tokens after a row's EOS are EOS.
- ``unroll{mode=partitioned,partition=25}`` (the default): the decoder becomes ``ceil(max_len/partition)``
  graphs of steps; the program's graph calls the encoder, init_state and the partitions as submodules, and
  the decode runtime (``fxopt.backends.decode``) runs them with an EOS check on the host between partitions.
- ``unroll{mode=partitioned,boundaries=auto,lengths=FILE}``: boundaries minimising the expected cost (steps
  computed + a per-call overhead) for the observed output lengths in FILE; ``boundaries=10:30`` sets them
  explicitly (stops, ``:``-separated; ``max_len`` is implied).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fxopt.errors import InputError
from fxopt.ir import devices, loops, loops_batch
from fxopt.ir.program import Program
from fxopt.passes.unroll import boundaries as bnd
from fxopt.ir import decode_graphs as unroll_graphs
from fxopt.passes.base import Pass, PassResult
from fxopt.passes.unroll import hop as unroll_hop

#: Per partition call when the device profile has no link latency (the CPU): a Python call of a graph
#: module plus reading the EOS flag back, measured ~40-60 us on this machine (benchmarks/unroll.py).
CPU_CALL_OVERHEAD_S = 50e-6


@dataclass(frozen=True)
class Unroll(Pass):
    """Unroll a decode loop fully (``mode=full``) or into partitions with early stop (``mode=partitioned``)."""

    name = "unroll"
    mode: Literal["full", "partitioned"] = "partitioned"
    partition: int = 25
    boundaries: str = ""
    lengths: str = ""
    max_len: int = 0
    device: str = "inf1"
    call_overhead_us: float = -1.0
    max_partitions: int = 0

    def __post_init__(self) -> None:
        if self.partition < 1:
            raise InputError(f"pass 'unroll': partition must be >= 1, got {self.partition}")
        if self.max_len < 0 or self.max_partitions < 0:
            raise InputError("pass 'unroll': max_len and max_partitions must be >= 0 (0 = the model's / no limit)")
        if self.mode == "full" and (self.boundaries or self.lengths):
            raise InputError("pass 'unroll': boundaries/lengths apply to mode=partitioned, not mode=full")
        if self.boundaries == "auto" and not self.lengths:
            raise InputError("pass 'unroll': boundaries=auto needs lengths=FILE (a JSON list or CSV of output lengths)")
        devices.get_profile(self.device)

    # ------------------------------------------------------------------------------------------ run
    def run(self, program: Program) -> PassResult:
        """Rebuild ``program``'s graph as the requested variant; returns what was built."""
        region = loops.decode_region(program)
        if region is None:
            if unroll_hop.has_hop_loops(program):
                return unroll_hop.run(self, program)
            return PassResult(False, {"loops": 0},
                              ["no decode loop (capture a decode-loop protocol module, docs/decode-loop.md); "
                               "nothing to unroll"])
        max_len = self.max_len or region["max_len"]
        if max_len > region["max_len"]:
            raise InputError(f"pass 'unroll': max_len={max_len} exceeds the model's max_len "
                             f"{region['max_len']} (the step was captured for at most that many steps)")
        details: dict = {"variant": self.mode, "max_len": max_len}
        notes: list[str] = []
        if self.mode == "full":
            plan = loops.plan_for("full", None, max_len)
        else:
            stops = self._stops(region, max_len, details, notes)
            plan = loops.plan_for("partitioned", bnd.parts_of(stops), max_len)
        flops = loops.decoder_flops(region, max_len)
        details.update({"decoder_flops_exact": flops["exact"], "decoder_flops_padded": flops["padded"],
                        "exact_vs_padded": round(flops["ratio"], 4)})
        if region.get("plan") == plan:
            notes.append(f"already {self._describe(plan)}")
            return PassResult(False, details, notes)
        if plan["variant"] == "full":
            gm = unroll_graphs.build_full(region, max_len)
            details["graphs"] = 1
            details["nodes_per_graph"] = [len(gm.graph.nodes)]
        else:
            gm = unroll_graphs.build_top(region, [tuple(p) for p in plan["parts"]], max_len)
            details["graphs"] = 1 + len(plan["parts"])  # encoder (+ init) and the partitions
            details["nodes_per_graph"] = [len(getattr(gm, unroll_graphs.part_name(k)).graph.nodes)
                                          for k in range(len(plan["parts"]))]
        program.graph_module = gm
        if region.get("dynamic_batch"):
            program.dynamic_dims = loops_batch.input_dims(program)
        region["plan"] = plan
        notes.append(f"built {self._describe(plan)}")
        return PassResult(True, details, notes)

    # ------------------------------------------------------------------------------------------ boundaries
    def _stops(self, region: dict, max_len: int, details: dict, notes: list) -> list[int]:
        """The partition stops for this pass's options; fills the boundary report into ``details``."""
        even = bnd.even_stops(max_len, min(self.partition, max_len))
        if not self.boundaries:
            stops = even
        elif self.boundaries == "auto":
            stops = self._auto(region, max_len, even, details, notes)
        else:
            stops = _parse_stops(self.boundaries, max_len)
        details["boundaries"] = stops
        details["steps_per_partition"] = [b - a for a, b in bnd.parts_of(stops)]
        if self.lengths and self.boundaries != "auto":
            hist = bnd.read_lengths(self.lengths, max_len)
            costs, overhead = self._costs(region, max_len)
            details["expected"] = bnd.expected(hist, stops, costs, overhead)
        return stops

    def _costs(self, region: dict, max_len: int) -> tuple[list[float], float]:
        profile = devices.get_profile(self.device)
        costs = [devices.estimate_time(loops.step_cost(region, t), profile) for t in range(max_len)]
        if self.call_overhead_us >= 0:
            overhead = self.call_overhead_us * 1e-6
        else:
            overhead = 2 * profile.link_latency or CPU_CALL_OVERHEAD_S
        return costs, overhead

    def _auto(self, region: dict, max_len: int, even: list[int], details: dict, notes: list) -> list[int]:
        hist = bnd.read_lengths(self.lengths, max_len)
        costs, overhead = self._costs(region, max_len)
        stops = bnd.choose_boundaries(hist, costs, overhead, self.max_partitions)
        chosen, base = bnd.expected(hist, stops, costs, overhead), bnd.expected(hist, even, costs, overhead)
        details["expected"] = chosen
        details["expected_even"] = {**base, "partition": min(self.partition, max_len)}
        details["cost_model"] = {"device": self.device, "step_us": [round(c * 1e6, 3) for c in costs],
                                 "call_overhead_us": round(overhead * 1e6, 3)}
        notes.append(f"auto boundaries {stops}: expected {chosen['steps']} steps, {chosen['calls']} partition "
                     f"calls per request vs {base['steps']} steps, {base['calls']} calls with even "
                     f"partitions of {min(self.partition, max_len)}")
        return stops

    @staticmethod
    def _describe(plan: dict) -> str:
        if plan["variant"] == "full":
            return f"a full unroll of {plan['max_len']} steps"
        return f"{len(plan['parts'])} partitions {[b - a for a, b in plan['parts']]}"


def _parse_stops(text: str, max_len: int) -> list[int]:
    """``"10:30"`` -> ``[10, 30, max_len]``; raises InputError when not increasing within ``(0, max_len]``."""
    try:
        stops = [int(x) for x in text.replace(" ", "").split(":") if x]
    except ValueError:
        raise InputError(f"pass 'unroll': boundaries={text!r} must be 'auto' or stops like 10:30") from None
    if not stops or stops[-1] != max_len:
        stops.append(max_len)
    if any(b <= a for a, b in zip([0] + stops, stops)) or stops[-1] > max_len:
        raise InputError(f"pass 'unroll': boundaries={text!r} must increase within 1..{max_len}")
    return stops


