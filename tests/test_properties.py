"""Property tests: every registered pass on random small models (the generator is ``tests/graphgen.py``).

Models are random ``nn.Module`` s written as source and captured with :func:`fxopt.capture` (real torch.export
core-ATen graphs). Properties, one test each:

1. each pass keeps numerics: ``optimize(program, [name], verify=True)`` does not raise and its outputs match
   the captured program's on the example inputs and on fresh random inputs (the shared rule of
   ``fxopt.ir.numerics``, ints exact);
2. each pass is idempotent: a second run reports ``modified == False``;
3. random pipelines (1-5 registered passes) keep numerics and leave a graph that passes ``graph.lint()``;
4. dce and canonicalize never add nodes; fold-constants never adds call_function nodes; dce leaves no dead
   pure node;
5. ``optimize`` never mutates the Program it is given (code, graph, node meta, weights, results);
6. aliasing is kept: adding 1 in place to any output changes the other outputs and the inputs exactly as it
   does with the captured program, and never changes what a later call returns (an output that is a
   weight tensor would);
7. the reference runtime (``backends/reinplace`` writes dead scratch buffers in place) returns the graph's
   outputs bit for bit and leaves inputs and weights as they were, on the captured program and after every
   pass.

Cost: a capture costs ~0.4 s (``run_decompositions``), a pass run a few ms. So every property test draws the
*same* example sequence (one fixed ``@seed``, which takes precedence over ``derandomize=True``; both make runs
reproducible) and one capture cache serves the whole file: each model is captured once. Environment:
``FXOPT_FUZZ_EXAMPLES=N`` examples per property (default 20), ``FXOPT_FUZZ_SEED=S`` another sequence — for
long local runs, e.g. ``FXOPT_FUZZ_EXAMPLES=500 FXOPT_FUZZ_SEED=7 pytest tests/test_properties.py``.

Known pass bugs live in ``REPRODUCERS``: each minimal model runs in ``test_regression`` for every pass,
``xfail(strict=True)`` for the passes that still have the bug (so a fix shows up as XPASS and the entry is
moved to the fixed ones). A numerics/idempotence bug also carries a message signature: random examples that
fail that way in that pass count as passing (a hypothesis ``event``), so the property goes on testing the pass
for other bugs. An open aliasing bug marks the pass's property-6 instance ``xfail(strict=True)``; the aliasing
reproducers are explicit examples there, so it fails fast and deterministically. Shrinking is off by default
(``FXOPT_FUZZ_SHRINK=1``): each candidate costs a capture.
"""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, Phase, event, example, given, note, seed, settings
from hypothesis.control import currently_in_test_context

import fxopt
from fxopt.ir.program import set_attr
from fxopt.passes.manager import optimize
from fxopt.passes.registry import pass_names
from fxopt.ir.numerics import depths_of, first_difference
from graphgen import ModelSpec, capture_spec, model_specs

EXAMPLES = int(os.environ.get("FXOPT_FUZZ_EXAMPLES", "20"))
FUZZ_SEED = int(os.environ.get("FXOPT_FUZZ_SEED", "20240611"))
# Shrinking re-captures every candidate (~0.4 s each) and can take minutes; the failing spec is printed either
# way (at most ~12 lines). FXOPT_FUZZ_SHRINK=1 turns it on.
PHASES = tuple(p for p in Phase if p is not Phase.shrink or os.environ.get("FXOPT_FUZZ_SHRINK") == "1")

# Registered passes (other tests register throw-away `test-*` passes while they run: not ours to check).
PASSES = [name for name in pass_names() if not name.startswith("test-")]


def fuzz(max_examples: int = EXAMPLES):
    """``@given(spec=model_specs())`` with this file's settings and the shared example sequence."""

    def decorate(fn):
        fn = given(spec=model_specs())(fn)
        fn = settings(max_examples=max_examples, deadline=None, derandomize=True, database=None, phases=PHASES,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                             HealthCheck.filter_too_much])(fn)
        return seed(FUZZ_SEED)(fn)

    return decorate


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add wake-up latency (gelu on 3x4 takes ms on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ helpers
_CAPTURED: dict[ModelSpec, tuple] = {}


def _snapshot(program) -> tuple:
    return program.graph_module.code, str(program.graph)


def captured(spec: ModelSpec):
    """The captured Program of ``spec``, cached for the whole file (recaptured if something changed it, which
    test_optimize_does_not_mutate_its_input reports). Checked once against the eager model."""
    if currently_in_test_context():
        note(spec.source())
    hit = _CAPTURED.get(spec)
    if hit is not None and _snapshot(hit[0]) == hit[1]:
        return hit[0]
    model, inputs = spec.build(), spec.make_inputs()
    program = capture_spec(spec, model)       # a dynamic batch when the spec asks for one
    with torch.no_grad():
        eager = model(*[t.clone() for t in inputs])
    eager = eager if isinstance(eager, tuple) else (eager,)
    problem = first_difference(tuple(eager), run(program, inputs), depths_of(program))
    assert problem is None, f"capture differs from the eager model (generator or capture bug): {problem}"
    _CAPTURED[spec] = (program, _snapshot(program))
    return program


def run(program, inputs: tuple) -> tuple:
    """Flat outputs of ``program`` on clones of ``inputs``."""
    return program.run_flat(program.flatten_inputs(tuple(t.clone() for t in inputs)))


def input_sets(spec: ModelSpec) -> list[tuple]:
    """The example inputs and two fresh random input sets of the same shapes and dtypes."""
    return [spec.make_inputs(), spec.make_inputs(seed=spec.seed + 1), spec.make_inputs(seed=spec.seed + 7919)]


def assert_same_numerics(reference, optimized, spec: ModelSpec, what: str) -> None:
    for i, inputs in enumerate(input_sets(spec)):
        problem = first_difference(run(reference, inputs), run(optimized, inputs), depths_of(reference))
        assert problem is None, f"{what}: {problem} ({'example' if i == 0 else 'fresh random'} inputs)"


def optimize_tracked(program, passes, *, verify: bool):
    """``optimize``; an exception gets ``fxopt_pass``: the pass that was running (or being verified)."""
    started: list[str] = []

    def on_event(kind, report):
        if kind == "start":
            started.append(report.name)

    try:
        return optimize(program, passes, verify=verify, on_event=on_event)
    except Exception as exc:
        exc.fxopt_pass = started[-1] if started else None
        raise


_NUMERICS: dict[tuple, BaseException | None] = {}  # (spec, pass) -> what check_numerics raised, for property 3


def check_numerics(program, name: str, spec: ModelSpec) -> None:
    """Property 1 for one pass on one model."""
    try:
        optimized = optimize_tracked(program, [name], verify=True)  # VerificationError: lint/numeric failure
        if optimized.reports[-1].modified:
            assert_same_numerics(program, optimized, spec, f"pass {name!r}")
        else:  # then the manager does not recompile: the graph must be exactly the input's
            assert str(optimized.graph) == str(program.graph), f"pass {name!r} changed the graph, said it did not"
    except Exception as exc:
        _NUMERICS[spec, name] = exc
        raise
    _NUMERICS[spec, name] = None


def call_function_count(program) -> int:
    return sum(1 for n in program.graph.nodes if n.op == "call_function")


def random_pipelines(spec: ModelSpec, count: int = 3) -> list[list[str]]:
    """``count`` pipelines of 1-5 registered passes, derived from the spec's seed (so a failing example
    reproduces them, and the hypothesis draws stay the same for every test, keeping the capture cache warm)."""
    rng = random.Random(spec.seed)
    return [[rng.choice(PASSES) for _ in range(rng.randint(1, 5))] for _ in range(count)]


def private_weights(program):
    """A copy of ``program`` with its own clones of every weight (the aliasing check mutates outputs, which
    may be weights after a buggy pass; the cached program must not see that)."""
    dup = program.copy()
    for target, value in dup.parameters().items():
        set_attr(dup.graph_module, target, value.clone())
    return dup


def mutation_effects(program, inputs: tuple) -> list[tuple]:
    """For each output k: run on fresh input clones, add 1 to output k in place, and record whether that
    raised, the values of all outputs and inputs afterwards, and the outputs of a later call."""
    effects = []
    for k in range(len(run(program, inputs))):
        ins = tuple(t.clone() for t in inputs)
        outs = program.run_flat(program.flatten_inputs(ins))
        try:
            outs[k].add_(1)
            raised = None
        except RuntimeError as exc:  # e.g. an expanded (overlapping) output
            raised = type(exc).__name__
        effects.append((raised, tuple(o.clone() for o in outs) + ins, run(program, inputs)))
    return effects


def check_aliasing(program, name: str, spec: ModelSpec, *, skip_broken: bool = False) -> None:
    """Property 6 for one pass on one model."""
    program = private_weights(program)
    optimized = optimize(program, [name], verify=False)
    if not optimized.reports[-1].modified:
        return  # the same graph (property 1 checks that), so the same aliasing
    inputs = spec.make_inputs()
    baseline = run(program, inputs)
    if skip_broken:
        try:
            run(optimized, inputs)
        except Exception:  # noqa: BLE001 - a graph that no longer runs is test_pass_keeps_numerics' finding
            event(f"{name} breaks the graph: skipped")
            return
    original = mutation_effects(program, inputs)
    depths = depths_of(program)
    for raised, _, later in original:  # the generator never returns weight aliases: later calls are clean
        assert raised is not None or first_difference(baseline, later, depths) is None, "generated model leaks state"
    rewritten = mutation_effects(optimized, inputs)
    for k, ((raised0, after0, _), (raised1, after1, later1)) in enumerate(zip(original, rewritten)):
        assert raised0 == raised1, f"output {k}: in-place add raised {raised0} before {name}, {raised1} after"
        problem = first_difference(after0, after1, depths)
        assert problem is None, (f"after {name}, adding 1 in place to output {k} changes the outputs and inputs "
                                 f"differently: {problem} (values are the outputs, then the inputs)")
        problem = first_difference(baseline, later1, depths)
        assert problem is None, f"after {name}, adding 1 in place to output {k} changes later calls: {problem}"


# ------------------------------------------------------------------------------- known pass bugs
@dataclass(frozen=True)
class Known:
    """A pass bug found by these properties: why it fails, and (for numerics and idempotence bugs) a regex
    that ``"ExceptionType: message"`` of its failures matches. Random examples failing that way, in that
    pass, count as passing (an ``event`` in the statistics), so the property keeps testing the pass for other
    bugs; the reproducer pins the bug itself with a strict xfail."""

    reason: str
    signature: str | None = None


def _spec(body, outputs, init=(), shape=(2, 3)) -> ModelSpec:
    return ModelSpec(inputs=(("x", shape, "float32"),), init=tuple(init), body=tuple(body),
                     outputs=tuple(outputs), seed=0)


_W = ["self.w0 = nn.Parameter(torch.randn(3))"]
# The view after a rewritten copy fails: at run time (verification), or in the pass's own shape inference.
_VIEW_FAILS = r"(view size is not compatible|ValueError: Cannot view a tensor with shape)"

# Reproducers: (id, model, property checked, {pass: Known}). `test_regression` runs each one for every
# registered pass, xfail(strict=True) for the passes listed; the aliasing ones are also explicit examples of
# property 6, whose instance for a listed pass is xfail(strict=True) (aliasing failures have no narrower
# signature than "aliasing changed").
REPRODUCERS = [
    # Found by these properties in canonicalize and fixed there (ir/aliasing.py, copy_removal_allowed); kept
    # as regression tests for every pass.
    ("identity-arith-output", _spec(["v0 = x * 1", "v1 = x + 0", "v2 = x - 0", "v3 = x / 1"],
                                    ["v0", "v1", "v2", "v3", "x"]), "aliasing", {}),
    ("clone-under-view-output", _spec(["v0 = x.clone().view(-1)", "v1 = x.clone().t()", "v2 = x.clone()[:, :]"],
                                      ["x", "v0", "v1", "v2"]), "aliasing", {}),
    ("non-dense-copy-then-view", ModelSpec(
        inputs=(("x", (4, 3), "float32"),),
        body=("v0 = x[::2].clone().view(-1)", "v1 = x.expand(2, 4, 3).clone().view(-1)",
              "v2 = x[:, ::2].to(torch.float32, copy=True).view(-1)"),
        outputs=("v0", "v1", "v2")), "numerics", {}),
    ("non-dense-copy-then-view-chain", ModelSpec(
        inputs=(("x", (3, 3, 1), "float32"),), body=("v0 = x.expand(2, 3, 3, 1).clone().view(-1).view(1, 18)",),
        outputs=("v0",)), "numerics", {}),
    ("non-dense-identity-arith-then-view", ModelSpec(
        inputs=(("x", (4, 3), "float32"),),
        body=("v0 = (x[::2] * 1).view(-1)", "v1 = (x[:, ::2] + 0).view(-1)",
              "v2 = (x.expand(2, 4, 3) / 1).view(-1)"),
        outputs=("v0", "v1", "v2")), "numerics", {}),
    # Found by these properties in dedupe and fixed there; kept as regression tests.
    ("cse-under-view-output", _spec(["v0 = x * 2", "v1 = (x * 2).view(-1)", "v2 = (x + 1).t()",
                                     "v3 = (x + 1).t()"], ["v0", "v1", "v2", "v3"]), "aliasing", {}),
    ("input-and-its-clone", _spec(["v0 = x.clone()"], ["x", "v0", "v0"]), "aliasing", {}),
    # dedupe was not idempotent here (the collapsed permutes stayed as dead users of the copies until the
    # final DCE, so the copy rules only fired on a second run); fixed in dedupe.
    ("copy-under-cancelling-permutes", _spec(["v0 = x.clone().t().t() + 1",
                                              "v1 = torch.clone((x * 2).permute(1, 0).permute(1, 0))"],
                                             ["v0", "v1"]), "idempotence", {}),
    # fold-constants returned a folded output as the new weight tensor itself (adding to the result in place
    # changed every later call); fixed in fold-constants.
    ("weight-times-one-output", _spec(["v0 = self.w0 * 1", "v1 = x + self.w0 * 1"], ["v0", "v1"], init=_W),
     "aliasing", {}),
    ("folded-constant-output", _spec(["v0 = self.w0 * 2 + 1", "v1 = x + self.w0.exp()"], ["v0", "v1"], init=_W),
     "aliasing", {}),
    # moe's horizontal fusion checked only the direct view users of a fused linear's slice, so a later
    # view(-1) failed on a 3-D input; fixed in moe_rewrite (aliasing users are replayed transitively).
    ("horizontal-linears-3d-then-view", ModelSpec(
        inputs=(("x", (2, 3, 4), "float32"),),
        init=("self.lin0 = nn.Linear(4, 2, bias=True)", "self.lin1 = nn.Linear(4, 3, bias=True)"),
        body=("v0, v1 = self.lin0(x), self.lin1(x)", "v2 = v0.view(-1)"), outputs=("v2", "v1")), "numerics",
     {}),
    # found by a fuzz campaign (seed 13): the replay ran on fake tensors, whose view() does not check strides,
    # so a fused slice's view -> permute -> view(-1) passed the check and failed at run time; the replay now
    # runs on meta tensors (moe_rewrite._needs_contiguous).
    ("horizontal-linears-permuted-view", ModelSpec(
        inputs=(("x", (1, 1), "float32"),),
        init=("self.lin0 = nn.Linear(1, 1, bias=False)", "self.lin1 = nn.Linear(1, 2, bias=False)"),
        body=("v0 = x.expand(2, 1, 1).clone().view(1, 2, 1)", "v1, v2 = self.lin0(v0), self.lin1(v0)",
              "v3 = v2.transpose(0, 1).contiguous().view(-1)"), outputs=("v3", "v1")), "numerics", {}),
    # found by a fuzz campaign with routed experts (seed 3): a routed group reading another group's result
    # kept a stale match of that result, so the first group's experts stayed alive and a second moe run fused
    # them again; moe now reads x/idx from the live graph and regrows chains after routed fusion.
    ("routed-group-reads-routed-group", ModelSpec(
        inputs=(("x", (3, 2), "float32"),),
        init=("self.g0 = nn.Linear(2, 2)", "self.a0 = nn.Linear(2, 2)", "self.a1 = nn.Linear(2, 2)",
              "self.g1 = nn.Linear(2, 2)", "self.b0 = nn.Linear(2, 2)", "self.b1 = nn.Linear(2, 2)"),
        body=("w0, i0 = torch.topk(torch.softmax(self.g0(x), -1), 1); v0 = x.new_zeros(3, 2); "
              "t, s = torch.where(i0 == 0); v0 = v0.index_add(0, t, self.a0(x[t]) * w0[t, s].unsqueeze(-1)); "
              "t, s = torch.where(i0 == 1); v0 = v0.index_add(0, t, self.a1(x[t]) * w0[t, s].unsqueeze(-1))",
              "w1, i1 = torch.topk(torch.softmax(self.g1(v0), -1), 1); v1 = v0.new_zeros(3, 2); "
              "t, s = torch.where(i1 == 0); v1 = v1.index_add(0, t, self.b0(v0[t]) * w1[t, s].unsqueeze(-1)); "
              "t, s = torch.where(i1 == 1); v1 = v1.index_add(0, t, self.b1(v0[t]) * w1[t, s].unsqueeze(-1))"),
        outputs=("v1",)), "idempotence", {}),
    # found by the same campaign: with a dynamic batch, a routed expert's unbacked row count inherits the
    # batch's range (up to int64 max) as its "bound", split's cost estimate became ~1e22 ps and the min-cut
    # overflowed; such bounds now count as unknown (ir/cost._upper_bound) and capacities are clamped.
    ("routed-experts-dynamic-batch", ModelSpec(
        inputs=(("x", (2, 1), "float32"),),
        init=("self.g0 = nn.Linear(1, 2)", "self.a0 = nn.Linear(1, 1)", "self.a1 = nn.Linear(1, 1)"),
        body=("w0, i0 = torch.topk(torch.softmax(self.g0(x), -1), 1); v0 = x.new_zeros(x.shape[0], 1); "
              "t, s = torch.where(i0 == 0); v0 = v0.index_add(0, t, self.a0(x[t]) * w0[t, s].unsqueeze(-1)); "
              "t, s = torch.where(i0 == 1); v0 = v0.index_add(0, t, self.a1(x[t]) * w0[t, s].unsqueeze(-1))",),
        outputs=("v0",), dynamic_batch=True), "numerics", {}),
]

KNOWN_SIGNATURES = {name: [bug.signature for *_, bugs in REPRODUCERS for n, bug in bugs.items()
                           if n == name and bug.signature] for name in PASSES}


def known_failure(name: str | None, exc: BaseException) -> bool:
    """True when ``exc``, raised while pass ``name`` ran or was verified, is one of its known bugs."""
    return any(re.search(sig, f"{type(exc).__name__}: {exc}") for sig in KNOWN_SIGNATURES.get(name, ()))


def check_numerics_unless_known(program, name: str, spec: ModelSpec) -> None:
    try:
        check_numerics(program, name, spec)
    except Exception as exc:  # noqa: BLE001 - re-raised unless known
        if not known_failure(name, exc):
            raise
        event(f"known {name} bug")  # counted as passing, not rejected: keeps the shared example sequence


# ------------------------------------------------------------------------------- 1. numerics per pass
@pytest.mark.parametrize("name", PASSES)
@fuzz()
def test_pass_keeps_numerics(name, spec):
    check_numerics_unless_known(captured(spec), name, spec)


# ------------------------------------------------------------------------------- 2. idempotence
def check_idempotent(program, name: str) -> None:
    """Property 2 for one pass on one model."""
    result = optimize(program, [name, name], verify=False)  # numerics are property 1's job
    second = result.reports[-1]
    assert not second.modified, (f"pass {name!r} changed the graph again on its second run: "
                                 f"{second.details}\n{result.graph_module.code}")


@fuzz()
def test_passes_are_idempotent(spec):
    program = captured(spec)
    for name in PASSES:
        try:
            check_idempotent(program, name)
        except AssertionError as exc:
            if not known_failure(name, exc):
                raise
            event(f"known {name} bug")


# ------------------------------------------------------------------------------- 3. random pipelines
@fuzz()
def test_random_pipelines_keep_numerics_and_lint(spec):
    """Composition: on models where every pass alone keeps numerics (else that is property 1's finding and
    the example is skipped here), every pipeline does too."""
    program = captured(spec)
    for name in PASSES:
        if (spec, name) not in _NUMERICS:  # property 1 ran it already, unless this test runs alone
            try:
                check_numerics(program, name, spec)
            except Exception:  # noqa: BLE001 - property 1 reports it
                pass
        if _NUMERICS[spec, name] is not None:
            event("a pass alone fails: skipped")  # not reject(): keeps the shared example sequence
            return
    for pipeline in random_pipelines(spec):
        try:
            optimized = optimize_tracked(program, pipeline, verify=True)
        except Exception as exc:  # noqa: BLE001 - re-raised unless known
            if not known_failure(getattr(exc, "fxopt_pass", None), exc):
                raise
            event("known bug met in a pipeline")  # of the pass then running (see REPRODUCERS)
            continue
        optimized.graph.lint()
        assert [r.name for r in optimized.reports] == pipeline
        assert_same_numerics(program, optimized, spec, f"pipeline {','.join(pipeline)}")


# ------------------------------------------------------------------------------- 4. node counts
# pass -> what must not grow: every node, or call_function nodes (folding adds get_attr nodes for new weights)
NON_GROWING = {"dce": "nodes", "canonicalize": "nodes", "fold-constants": "call_function"}


@fuzz()
def test_passes_do_not_grow_the_graph(spec):
    program = captured(spec)
    for name in (n for n in NON_GROWING if n in PASSES):
        optimized = optimize(program, [name], verify=False)
        if NON_GROWING[name] == "nodes":
            assert optimized.num_nodes() <= program.num_nodes(), f"{name} added nodes"
        assert call_function_count(optimized) <= call_function_count(program), f"{name} added call_functions"
        if name == "dce":
            dead = [n.name for n in optimized.graph.nodes
                    if not n.users and n.op in ("call_function", "get_attr") and not n.is_impure()]
            assert not dead, f"dce left dead nodes {dead}"


# ------------------------------------------------------------------------------- 5. input not mutated
def _state(program) -> dict:
    return {
        "code": program.graph_module.code,
        "graph": str(program.graph),
        "meta": [(n.name, sorted(n.meta), n.meta.get("provenance")) for n in program.graph.nodes],
        "attrs": {k: (id(v), v.clone()) for k, v in program.parameters().items()},
        "buffers": sorted(name for name, _ in program.graph_module.named_buffers()),
        "params": sorted(name for name, _ in program.graph_module.named_parameters()),
        "regions": repr(program.regions),
        "reports": list(program.reports),
        "target": program.target,
        "dirty": program.dirty,
    }


@fuzz()
def test_optimize_does_not_mutate_its_input(spec):
    program = captured(spec)
    expected = run(program, spec.make_inputs())
    for passes in [[name] for name in PASSES] + [PASSES]:
        before = _state(program)
        try:
            optimize(program, passes, verify=False)
        except Exception:  # noqa: BLE001 - a pass failing is properties 1 and 3's finding; the input must
            event("optimize raised")  # still be untouched
        after = _state(program)
        what = f"optimize({','.join(passes)})"
        for key in before:
            if key != "attrs":
                assert after[key] == before[key], f"{what} changed the input program's {key}"
        assert after["attrs"].keys() == before["attrs"].keys(), f"{what} changed the input's weight names"
        for target, (ident, value) in before["attrs"].items():
            assert after["attrs"][target][0] == ident, f"{what} rebound weight {target} in the input program"
            assert torch.equal(after["attrs"][target][1], value), f"{what} modified weight {target} in place"
        assert first_difference(expected, run(program, spec.make_inputs()), depths_of(program)) is None, \
            f"{what} changed results"


# ------------------------------------------------------------------------------- 6. aliasing
def _alias_params():
    for name in PASSES:
        reasons = [bugs[name].reason for _, _, check, bugs in REPRODUCERS if check == "aliasing" and name in bugs]
        marks = [pytest.mark.xfail(strict=True, reason="; ".join(reasons))] if reasons else []
        yield pytest.param(name, marks=marks, id=name)


def _with_alias_examples(fn):
    for _, spec, check, _ in reversed(REPRODUCERS):
        if check == "aliasing":
            fn = example(spec=spec)(fn)
    return fn


@pytest.mark.parametrize("name", list(_alias_params()))
@_with_alias_examples
@fuzz()
def test_pass_keeps_output_aliasing(name, spec):
    check_aliasing(captured(spec), name, spec, skip_broken=True)


# ------------------------------------------------------------------------------- 7. in-place runtime
@fuzz()
def test_reference_runtime_writes_only_dead_scratch_buffers(spec):
    program = captured(spec)
    programs = [program]
    try:
        programs.append(optimize(program, PASSES, verify=False))
    except Exception:  # noqa: BLE001 - a pass failing is properties 1 and 3's finding
        event("optimize raised")
    for prog in programs:
        compiled = fxopt.compile(prog, "reference")
        event(f"ops run in place: {'some' if compiled.inplace_ops else 'none'}")
        weights = {k: v.clone() for k, v in prog.parameters().items()}
        for inputs in input_sets(spec):
            flat = prog.flatten_inputs(tuple(t.clone() for t in inputs))
            kept = [t.clone() if isinstance(t, torch.Tensor) else t for t in flat]
            got = compiled.run_flat(flat)
            want = run(prog, inputs)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
            for a, b in zip(flat, kept):
                assert not isinstance(a, torch.Tensor) or torch.equal(a.nan_to_num(), b.nan_to_num()), \
                    "the runtime wrote an input"
        for k, v in prog.parameters().items():
            assert torch.equal(v.nan_to_num(), weights[k].nan_to_num()), f"the runtime wrote weight {k}"


# ------------------------------------------------------------------------------- regressions (known bugs)
def _regression_params():
    for rid, spec, check, bugs in REPRODUCERS:
        for name in PASSES:
            marks = [pytest.mark.xfail(strict=True, reason=bugs[name].reason)] if name in bugs else []
            yield pytest.param(name, spec, check, marks=marks, id=f"{rid}-{name}")


@pytest.mark.parametrize("name,spec,check", list(_regression_params()))
def test_regression(name, spec, check):
    program = captured(spec)
    if check == "numerics":
        check_numerics(program, name, spec)
    elif check == "idempotence":
        check_idempotent(program, name)
    else:
        check_aliasing(program, name, spec)
