"""The GenerationSpec checks every generation model gets (tests/test_generation*.py run them on their
models): fxopt's tokens equal ``model.generate(do_sample=False)`` for the step loop, the decode runtime,
unroll partitions, the full unroll, xla partitions, and artifacts loaded in a fresh process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import fxopt
from fxopt.backends import decode
from fxopt.ir import loops

import generation_cases as cases


class Case:
    """One model, prompt and settings, with ``generate``'s output and fxopt's capture."""

    def __init__(self, name: str, batch: int, early: bool):
        self.name, self.batch = name, batch
        self.model = cases.BUILDERS[name]()
        self.inputs = cases.prompt(name, batch)
        self.settings = cases.early_eos(name, self.model, self.inputs) if early else {}
        self.expected = cases.generate(self.model, self.inputs, **self.settings)
        self.program = cases.capture(self.model, self.inputs, self.settings)

    def check(self, tokens) -> None:
        got = cases.as_generate(self.program, tokens, self.inputs)
        assert torch.equal(got, self.expected), f"{self.name}: {got.tolist()} != {self.expected.tolist()}"


def make_case(request) -> Case:
    """A module-scoped fixture's Case from its ``(name, batch, early)`` param."""
    return Case(*request.param)


def case_params(names) -> list:
    """Batch 1 with the model's own settings, and batch 4 with padding and an early EOS, per model."""
    return [pytest.param((n, b, e), id=f"{n}-b{b}{'-eos' if e else ''}") for n in names for b, e in ((1, False), (4, True))]


class GenerationTests:
    """The checks; a test module subclasses this as ``Test...`` and defines the ``case`` fixture."""

    def test_capture_is_a_decode_loop_whose_first_token_comes_from_encode(self, case):
        region = loops.decode_region(case.program)
        assert region["first_token"] == 0 and region["max_len"] == cases.NEW - 1
        assert region["plan"]["variant"] == "loop"
        assert region["generation"]["max_new_tokens"] == cases.NEW

    def test_step_loop_graph_equals_generate(self, case):
        case.check(case.program.run_flat(case.program.flat_example_inputs()))

    def test_decode_runtime_equals_generate_and_stops_when_every_row_has(self, case):
        compiled = fxopt.compile(case.program, "reference")
        assert isinstance(compiled, decode.DecodeCompiled)
        case.check(compiled(*case.inputs))
        if case.name == "whisper":                        # its generate cuts the final EOS: count fxopt's own
            tokens = compiled(*case.inputs)
            eos = loops.decode_region(case.program)["eos_id"]
            new_tokens = loops.trim(tokens, eos).shape[1] if (tokens == eos).any(1).all() else tokens.shape[1]
        else:
            head = case.inputs[0].shape[1] if case.name in ("gpt2", "llama") else 1
            new_tokens = case.expected.shape[1] - head    # generate stops once every row has finished
        assert compiled.last_steps == new_tokens - 1      # the first token is encode's, then one step each

    def test_partitions_equal_generate(self, case):
        program = fxopt.optimize(case.program, "unroll{partition=3}")
        assert loops.decode_region(program)["plan"]["parts"] == [[0, 3], [3, 6], [6, 7]]
        case.check(fxopt.compile(program, "reference")(*case.inputs))

    def test_full_unroll_equals_generate(self, case):
        program = fxopt.optimize(case.program, "unroll{mode=full}")
        assert not any(n.op == "call_module" for n in program.graph.nodes)
        case.check(program.run_flat(program.flat_example_inputs()))

    def test_xla_default_pipeline_compiles_every_partition(self, case):
        pytest.importorskip("jax")
        program = fxopt.optimize(case.program, target="xla")
        compiled = fxopt.compile(program, "xla")
        assert isinstance(compiled, decode.PiecewiseDecode)
        assert "decode_part0" in compiled.extra["decode_pieces_on_target"]
        assert compiled.extra["accelerator_warning"] is None
        case.check(compiled(*case.inputs))

    def test_saved_artifacts_load_in_a_fresh_process_without_transformers(self, case, tmp_path):
        if case.batch == 1:
            pytest.skip("one fresh process per model: the batch-4 case")
        pytest.importorskip("jax")
        dirs = {}
        for backend, passes in (("reference", "unroll{partition=3}"), ("xla", None)):
            program = fxopt.optimize(case.program, passes, target=backend)
            dirs[backend] = fxopt.compile(program, backend).save(str(tmp_path / backend))
        torch.save(list(case.inputs), tmp_path / "inputs.pt")
        script = (
            "import json, os, sys, torch, fxopt\n"
            "inputs = torch.load(sys.argv[1])\n"
            "out = {b: fxopt.load(d)(*inputs).tolist() for b, d in json.loads(sys.argv[2]).items()}\n"
            "out['transformers'] = 'transformers' in sys.modules\n"
            "print(json.dumps(out), flush=True)\n"
            "os._exit(0)\n")   # a process that ran XLA can abort at interpreter shutdown (docs/backends/xla.md)
        run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "inputs.pt"), json.dumps(dirs)],
                             capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert run.returncode == 0, run.stderr[-2000:]
        out = json.loads(run.stdout.strip().splitlines()[-1])
        assert out.pop("transformers") is False
        for backend, tokens in out.items():
            case.check(torch.tensor(tokens))


def check_dynamic_batch(name: str) -> None:
    """One capture with ``dynamic_shapes="batch"`` at batch 4: its unroll partitions decode batches 1 and
    3 (rows of the padded prompt) with exactly ``generate``'s tokens."""
    model = cases.BUILDERS[name]()
    inputs = cases.prompt(name, 4)
    program = fxopt.capture(model, inputs, decode={"max_new_tokens": cases.NEW}, dynamic_shapes="batch")
    compiled = fxopt.compile(fxopt.optimize(program, "unroll{partition=3}"), "reference")
    for batch in (1, 3):
        rows = tuple(t[:batch] for t in inputs)
        got = cases.as_generate(program, compiled(*rows), rows)
        assert torch.equal(got, cases.generate(model, rows)), f"{name} at batch {batch}"
