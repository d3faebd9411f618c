"""Fuzz campaigns: random programs through every pass (and random pipelines), with verification.

    python -m fxopt.tools.fuzz --passes all --examples 2000 --pipelines --seed 1 --time-limit 3600 --out fuzz-out

Programs come from :func:`fxopt.tools.graphgen.model_specs` (random ``nn.Module`` s written as source,
``dynamic=True``: about half capture with a dynamic batch dim), captured with :func:`fxopt.capture`. For each
program and each selected pass the campaign checks, in this order:

1. capture reproduces the eager model on the example inputs (else the failure is ``capture``'s);
2. ``optimize(program, [pass], verify=True)`` raises nothing (lint + numerics after the pass);
3. when the pass changed the graph: the result matches the captured program on fresh random inputs, and,
   when the batch dim stayed dynamic and the eager model accepts another batch size, on inputs of that size;
   when it said it changed nothing: the graph is exactly the input's;
4. idempotence: running the pass again on its own result changes nothing;
5. the reference backend's runtime (which writes dead scratch buffers in place, ``backends/reinplace.py``)
   returns the optimized program's outputs bit for bit and leaves its inputs as they were.

With ``--pipelines`` each program also runs one random pipeline of 2-5 selected passes (``verify=True`` and a
fresh-input comparison). Any failure is a *difference*: hypothesis shrinks the program (``Phase.shrink``, at
most five minutes per failure), the minimized reproducer (model source + pass spec + message, runnable with
``python FILE``) is written to ``--out`` and printed, and the campaign goes on with the next round; later
failures with the same signature (pass + message with numbers blanked) count as already found. Exit code 1
when anything failed, 0 otherwise, 2 for bad arguments.

Draws run in rounds of ``ROUND`` examples, each a programmatic ``@given`` run with ``database=None`` and its
own seed (``--seed`` and the round number), so a campaign is reproducible and never writes a database.
``--jobs J`` runs J such processes with different seeds (one core each) and adds up their counts.
"""
from __future__ import annotations

# local imports: commands import torch and the compiler only when they run, so `fxopt --help` and argument errors answer without them (startup cost)
import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

ROUND = 100              # examples per hypothesis run
PIPELINE = "pipeline"    # the key counting random pipelines


@dataclass
class Failure:
    """One difference found: where (``pass_spec``: a pass, a pipeline, or ``capture``), what
    (``message``), on which program (``spec``, minimized unless ``minimized`` is False)."""

    pass_spec: str
    message: str
    spec: Any
    minimized: bool = True
    path: str | None = None

    @property
    def signature(self) -> str:
        """The pass and the message with numbers and node names blanked: failures of one bug share it."""
        return signature(self.pass_spec, self.message)


@dataclass
class CampaignResult:
    """What a campaign did: ``counts`` (checks passed per pass, plus ``pipeline``), ``programs`` (distinct
    programs captured), ``dynamic`` (of those, captured with a symbolic batch dim), ``seconds``,
    ``failures``."""

    counts: dict = field(default_factory=dict)
    programs: int = 0
    dynamic: int = 0
    seconds: float = 0.0
    failures: list = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Programs per second."""
        return self.programs / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict:
        """A JSON-able summary (failures as ``{pass, message, spec, minimized, path}``)."""
        return {"counts": self.counts, "programs": self.programs, "dynamic": self.dynamic,
                "seconds": round(self.seconds, 2), "examples_per_second": round(self.rate, 3),
                "failures": [{"pass": f.pass_spec, "message": f.message, "spec": repr(f.spec),
                              "minimized": f.minimized, "path": f.path} for f in self.failures]}


class Difference(Exception):
    """Raised inside a fuzz example: ``pass_spec`` broke the program (``message`` says how)."""

    def __init__(self, pass_spec: str, message: str):
        super().__init__(f"{pass_spec}: {message}")
        self.pass_spec = pass_spec
        self.message = message


def signature(pass_spec: str, message: str) -> str:
    """``pass_spec`` + ``message`` with numbers, node names and shapes blanked (one bug, one signature)."""
    text = re.sub(r"'[^']*'", "'_'", message)
    text = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", text)
    return f"{pass_spec}: {text[:160]}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# ------------------------------------------------------------------------------------------ one program
def _run(program, inputs: tuple) -> tuple:
    return program.run_flat(program.flatten_inputs(tuple(t.clone() for t in inputs)))


def _other_batch(spec, model) -> tuple | None:
    """Inputs with dim 0 one larger than the example's, when the eager model accepts them; else None."""
    import torch

    inputs = spec.make_inputs(seed=spec.seed + 3, batch=spec.inputs[0][1][0] + 1)
    try:
        with torch.no_grad():
            model(*[t.clone() for t in inputs])
    except Exception:  # noqa: BLE001 - the model hard-codes its batch size: nothing to compare
        return None
    return inputs


def _compare(reference, candidate, input_sets: list, where: str) -> None:
    from fxopt.ir.numerics import depths_of, first_difference

    depths = depths_of(reference)
    for label, inputs in input_sets:
        try:
            problem = first_difference(_run(reference, inputs), _run(candidate, inputs), depths)
        except Exception as exc:  # noqa: BLE001 - a graph that stops running on other inputs is a difference
            problem = f"fails to run: {_first_line(exc)}"
        if problem:
            raise Difference(where, f"{problem} ({label} inputs)")


def _compare_runtime(program, input_sets: list, where: str) -> None:
    """The reference backend's compiled ``program`` against the program itself: equal outputs bit for bit
    (NaNs where NaNs are), inputs untouched."""
    import torch

    from fxopt.backends.reference import ReferenceBackend

    try:
        compiled = ReferenceBackend().compile(program)
    except Exception as exc:  # noqa: BLE001
        raise Difference(where, f"reference backend: {_first_line(exc)}") from exc
    for label, inputs in input_sets:
        flat = program.flatten_inputs(tuple(t.clone() for t in inputs))
        kept = [t.clone() if isinstance(t, torch.Tensor) else t for t in flat]
        try:
            got = compiled.run_flat(flat)
        except Exception as exc:  # noqa: BLE001
            raise Difference(where, f"reference runtime fails to run: {_first_line(exc)} ({label} inputs)") from exc
        for i, (a, b) in enumerate(zip(got, _run(program, inputs))):
            if isinstance(a, torch.Tensor) and not torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)):
                raise Difference(where, f"reference runtime output {i} differs from the graph's ({label} inputs)")
        for i, (a, b) in enumerate(zip(flat, kept)):
            if isinstance(a, torch.Tensor) and not torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)):
                raise Difference(where, f"reference runtime wrote input {i} ({label} inputs)")


def check_program(spec, passes: list[str], pipelines: bool, counts: dict) -> bool:
    """Run every check of the module docstring for ``spec`` on ``passes`` (and one random pipeline when
    ``pipelines``); adds 1 to ``counts[pass]`` per pass that passed. Raises :class:`Difference` at the first
    failure. Returns True when the program was captured with a symbolic batch dim."""
    import torch

    from fxopt.ir.numerics import first_difference, output_depths
    from fxopt.passes.manager import optimize
    from fxopt.tools.graphgen import capture_spec

    model = spec.build()
    inputs = spec.make_inputs()
    try:
        program = capture_spec(spec, model)
        with torch.no_grad():
            eager = model(*[t.clone() for t in inputs])
        eager = eager if isinstance(eager, tuple) else (eager,)
        depths = output_depths(program.graph_module)
        problem = first_difference(tuple(eager), _run(program, inputs), depths)
    except Exception as exc:  # noqa: BLE001 - the generator only draws models that run eagerly
        raise Difference("capture", _first_line(exc)) from exc
    if problem:
        raise Difference("capture", f"captured program differs from the eager model: {problem}")
    sets = [("fresh random", spec.make_inputs(seed=spec.seed + 1))]
    # specialized dims are recorded under their size ("4"): only a symbol is a dynamic dim
    dynamic = any(not str(sym).isdigit() for sym in program.dynamic_dims)
    if dynamic:
        other = _other_batch(spec, model)
        if other is not None:
            try:
                captured_other = _run(program, other)
            except Exception:  # noqa: BLE001 - export specialized this input's batch (another input's stayed
                other = None   # symbolic): the graph only takes the example's batch size, by design
        if other is not None:
            with torch.no_grad():
                eager_other = model(*[t.clone() for t in other])
            eager_other = eager_other if isinstance(eager_other, tuple) else (eager_other,)
            problem = first_difference(tuple(eager_other), captured_other, depths)
            if problem:
                raise Difference("capture", f"captured program differs from the eager model at another batch "
                                            f"size: {problem}")
            sets.append(("other batch size", other))
    for name in passes:
        try:
            optimized = optimize(program, [name], verify=True)
        except Exception as exc:  # noqa: BLE001 - VerificationError, or the pass itself crashed
            raise Difference(name, _first_line(exc)) from exc
        if optimized.reports[-1].modified:
            _compare(program, optimized, sets, name)
            _compare_runtime(optimized, sets, name)
        elif str(optimized.graph) != str(program.graph):
            raise Difference(name, "reported no change but changed the graph")
        try:
            again = optimize(optimized, [name], verify=False)
        except Exception as exc:  # noqa: BLE001
            raise Difference(name, f"second run raised {_first_line(exc)}") from exc
        if again.reports[-1].modified:
            raise Difference(name, f"not idempotent: a second run changed the graph again ({again.reports[-1].details})")
        counts[name] = counts.get(name, 0) + 1
    if pipelines and passes:
        rng = random.Random(spec.seed)
        pipeline = [rng.choice(passes) for _ in range(rng.randint(2, 5))]
        where = ",".join(pipeline)
        try:
            optimized = optimize(program, pipeline, verify=True)
        except Exception as exc:  # noqa: BLE001
            raise Difference(where, _first_line(exc)) from exc
        _compare(program, optimized, sets, where)
        counts[PIPELINE] = counts.get(PIPELINE, 0) + 1
    return dynamic


# ------------------------------------------------------------------------------------------ campaign
def _round(passes, pipelines, round_seed, examples, deadline, shrink, result: CampaignResult, known: set,
           on_progress, ops=None) -> list:
    """One hypothesis run of up to ``examples`` programs; returns the failures it found (the first shrunk)."""
    from hypothesis import HealthCheck, Phase, given, seed, settings

    from fxopt.tools.graphgen import OP_CHOICES, model_specs

    state: dict[str, Any] = {"target": None, "spec": None, "diff": None, "stray": []}

    @seed(round_seed)
    @settings(max_examples=examples, database=None, deadline=None, derandomize=False,
              phases=[Phase.generate, Phase.shrink] if shrink else [Phase.generate],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(spec=model_specs(dynamic=True, ops=tuple(ops) if ops else OP_CHOICES))
    def fuzz_one(spec):
        shrinking = state["target"] is not None
        if not shrinking and time.monotonic() > deadline:
            return
        counts = {} if shrinking else result.counts
        try:
            dynamic = check_program(spec, passes, pipelines, counts)
        except Difference as diff:
            sig = signature(diff.pass_spec, diff.message)
            if sig in known:
                return  # found (and reported) before: keep looking for other bugs
            if state["target"] is None:
                state["target"] = sig
            if sig != state["target"]:  # another bug met while shrinking the first: report it unminimized
                state["stray"].append(Failure(diff.pass_spec, diff.message, spec, minimized=False))
                return
            state["spec"], state["diff"] = spec, diff
            raise
        if not shrinking:
            result.programs += 1
            result.dynamic += dynamic
            on_progress(result)

    shrunk = shrink
    try:
        fuzz_one()
    except Difference:
        pass
    except Exception:  # hypothesis' own errors (e.g. a failure that did not replay: Flaky)
        if state["diff"] is None:
            raise
        shrunk = False
    failures = []
    for stray in state["stray"]:
        if stray.signature not in known and stray.signature != state["target"]:
            known.add(stray.signature)
            failures.append(stray)
    if state["diff"] is not None:
        known.add(state["target"])
        failures.insert(0, Failure(state["diff"].pass_spec, state["diff"].message, state["spec"], minimized=shrunk))
    return failures


def run_campaign(passes: list[str], examples: int, *, pipelines: bool = False, seed: int = 0,
                 time_limit: float | None = None, out: str | None = None, shrink: bool = True,
                 on_progress=None, on_failure=None, ops: list[str] | None = None) -> CampaignResult:
    """Fuzz ``passes`` on ``examples`` random programs (fewer if ``time_limit`` seconds run out); returns a
    :class:`CampaignResult`. Failures are written to ``out`` (see :func:`write_reproducer`) and passed to
    ``on_failure(failure)``; ``on_progress(result)`` is called after every program. ``ops`` restricts the
    generator to these op kinds (names in :data:`fxopt.tools.graphgen.OPS`; default: all, weighted)."""
    import torch

    from fxopt.ir.program import Program  # noqa: F401 - import fxopt before timing starts

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: intra-op threads only add latency
    result = CampaignResult(counts={name: 0 for name in passes} | ({PIPELINE: 0} if pipelines else {}))
    known: set[str] = set()
    start = time.monotonic()
    deadline = start + time_limit if time_limit else float("inf")
    progress = on_progress or (lambda r: None)
    index = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            while result.programs < examples and time.monotonic() < deadline:
                before = result.programs
                found = _round(passes, pipelines, seed * 100003 + index, min(ROUND, examples - result.programs),
                               deadline, shrink, result, known, progress, ops)
                index += 1
                for failure in found:
                    if out:
                        failure.path = write_reproducer(failure, out)
                    result.failures.append(failure)
                    if on_failure:
                        on_failure(failure)
                if result.programs == before and not found:
                    break  # nothing drawn (time ran out inside the round)
    finally:
        torch.set_num_threads(threads)
        result.seconds = time.monotonic() - start
    return result


def reproducer_text(failure: Failure) -> str:
    """A runnable Python file reproducing ``failure``: the model source, the spec, and the pass spec."""
    spec = failure.spec
    return "\n".join([
        f"# fxopt fuzz reproducer ({'minimized' if failure.minimized else 'not minimized'})",
        f"# pass: {failure.pass_spec}",
        f"# failure: {failure.message}",
        "# run: python THIS_FILE  (raises the failure while the bug is open)",
        "#",
        *[f"# {line}" for line in spec.source().splitlines()],
        "import fxopt",
        "from fxopt.tools.fuzz import check_program",
        "from fxopt.tools.graphgen import ModelSpec",
        "",
        f"SPEC = {spec!r}",
        f"PASSES = {failure.pass_spec.split(',')!r}",
        "",
        'if __name__ == "__main__":',
        "    if PASSES == ['capture']:",
        "        check_program(SPEC, [], False, {})",
        "    elif len(PASSES) == 1:",
        "        check_program(SPEC, PASSES, False, {})",
        "    else:  # a pipeline",
        "        from fxopt.tools.graphgen import capture_spec",
        "        fxopt.optimize(capture_spec(SPEC), PASSES, verify=True)",
        "    print('no failure: fixed?')",
        "",
    ])


def write_reproducer(failure: Failure, out: str) -> str:
    """Write ``failure``'s reproducer to ``out/<pass>-<hash>.py`` (creating ``out``); returns the path."""
    os.makedirs(out, exist_ok=True)
    text = reproducer_text(failure)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", failure.pass_spec)[:60]
    path = os.path.join(out, f"{name}-{digest}.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


# ------------------------------------------------------------------------------------------ command line
def _pass_list(text: str) -> list[str]:
    from fxopt.errors import InputError
    from fxopt.passes.registry import build_pipeline, pass_names

    if text == "all":
        return [name for name in pass_names() if not name.startswith("test-")]
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InputError("--passes: give 'all' or pass names separated by commas")
    for name in names:
        build_pipeline(name)  # InputError for unknown names and options (a spec may carry options: moe{grouped=segment})
    return names


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m fxopt.tools.fuzz``."""
    p = argparse.ArgumentParser(prog="python -m fxopt.tools.fuzz",
                                description="Fuzz fxopt's passes with random programs (see the module docstring).")
    p.add_argument("--passes", default="all",
                   help="'all' or NAME[,NAME...]; a name may carry options without commas, e.g. "
                        "moe{grouped=segment} (default: all)")
    p.add_argument("--examples", type=int, default=100, help="programs to draw (default: 100)")
    p.add_argument("--pipelines", action="store_true", help="also run one random pipeline per program")
    p.add_argument("--seed", type=int, default=0, help="campaign seed (default: 0)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SEC", help="stop drawing after SEC seconds")
    p.add_argument("--out", default=None, metavar="DIR", help="write minimized reproducers here")
    p.add_argument("--jobs", type=int, default=1, help="processes (seeds SEED, SEED+1, ...; default 1)")
    p.add_argument("--ops", default=None, metavar="KIND[,KIND]",
                   help="draw only these op kinds (see fxopt.tools.graphgen.OPS; default: all)")
    p.add_argument("--no-shrink", action="store_true", help="report failures unminimized (faster)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _table(result: CampaignResult) -> str:
    lines = [f"{'pass':<22} {'examples':>9}", "-" * 32]
    lines += [f"{name:<22} {count:>9}" for name, count in result.counts.items()]
    lines += ["-" * 32,
              f"programs: {result.programs} ({result.dynamic} with a dynamic batch dim) in {result.seconds:.0f} s: "
              f"{result.rate:.2f} programs/s; failures: {len(result.failures)}"]
    return "\n".join(lines)


def _print_failure(failure: Failure) -> None:
    print(f"FAILURE in {failure.pass_spec}: {failure.message}" + (f" -> {failure.path}" if failure.path else ""),
          flush=True)
    print(failure.spec.source(), flush=True)


def _merge(parts: list[dict]) -> CampaignResult:
    from fxopt.tools.graphgen import ModelSpec  # noqa: F401 - eval of the reprs below

    total = CampaignResult()
    for part in parts:
        for name, count in part["counts"].items():
            total.counts[name] = total.counts.get(name, 0) + count
        total.programs += part["programs"]
        total.dynamic += part["dynamic"]
        total.seconds = max(total.seconds, part["seconds"])
        for f in part["failures"]:
            total.failures.append(Failure(f["pass"], f["message"], _SpecText(f["spec"]), f["minimized"], f["path"]))
    return total


class _SpecText:
    """A spec carried as its repr between processes (``source()`` gives the repr back)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def source(self) -> str:
        return self.text


def _run_jobs(args) -> CampaignResult:
    per_job = -(-args.examples // args.jobs)
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for j in range(args.jobs):
            cmd = [sys.executable, "-m", "fxopt.tools.fuzz", "--passes", args.passes, "--examples", str(per_job),
                   "--seed", str(args.seed + j), "--json", os.path.join(tmp, f"{j}.json"), "--quiet"]
            cmd += ["--pipelines"] if args.pipelines else []
            cmd += ["--time-limit", str(args.time_limit)] if args.time_limit else []
            cmd += ["--out", args.out] if args.out else []
            cmd += ["--no-shrink"] if args.no_shrink else []
            cmd += ["--ops", args.ops] if args.ops else []
            procs.append(subprocess.Popen(cmd))
        for proc in procs:
            proc.wait()
        parts = []
        for j in range(args.jobs):
            path = os.path.join(tmp, f"{j}.json")
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    parts.append(json.load(f))
    return _merge(parts)


def main(argv=None) -> int:
    """Run a campaign from the command line; prints a table (examples per pass, programs/s, failures) and
    each failure's reproducer; returns 0 when nothing failed, 1 otherwise, 2 for bad arguments."""
    from fxopt.errors import InputError

    args = build_parser().parse_args(argv)
    try:
        passes = _pass_list(args.passes)
        if args.examples < 0 or args.jobs < 1:
            raise InputError("--examples must be >= 0 and --jobs >= 1")
        ops = [o.strip() for o in args.ops.split(",") if o.strip()] if args.ops else None
        try:
            import hypothesis  # noqa: F401
        except ImportError:
            raise InputError("fuzzing needs hypothesis: pip install 'fxopt[dev]'") from None
        if ops:
            from fxopt.tools.graphgen import OPS

            unknown = [o for o in ops if o not in OPS]
            if unknown:
                raise InputError(f"--ops: unknown op kind '{unknown[0]}' (known: {', '.join(sorted(OPS))})")
    except InputError as exc:
        print(f"fxopt fuzz: error: {exc}", file=sys.stderr)
        return 2
    if args.jobs > 1:
        result = _run_jobs(args)
    else:
        last = [time.monotonic()]

        def progress(r: CampaignResult) -> None:
            if not args.quiet and time.monotonic() - last[0] > 30:
                last[0] = time.monotonic()
                print(f"... {r.programs} programs, {len(r.failures)} failures", flush=True)

        result = run_campaign(passes, args.examples, pipelines=args.pipelines, seed=args.seed,
                              time_limit=args.time_limit, out=args.out, shrink=not args.no_shrink,
                              on_progress=progress, on_failure=None if args.quiet else _print_failure, ops=ops)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result.to_json(), f, indent=1)
    if not args.quiet or args.jobs > 1:
        print(_table(result))
        for failure in result.failures:
            print(f"failure: {failure.pass_spec}: {failure.message}" + (f" ({failure.path})" if failure.path else ""))
    return 1 if result.failures else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
