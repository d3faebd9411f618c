"""decode=LoopSpec: a model written as users write it, whose forward runs its own greedy loop with a
data-dependent ``break``, captured from the pieces its loop calls; tokens equal the model's forward in every
unroll variant and on xla; wrong specs are one-line errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import fxopt
from fxopt.errors import InputError
from fxopt.ir import loops

BOS, VOCAB = 1, 12


class Captioner(nn.Module):
    """An encoder and a GRU decoder; forward stops when every row has emitted ``eos`` (a ``break``)."""

    def __init__(self, eos: int = 2, max_len: int = 10):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(6, 16)
        self.emb = nn.Embedding(VOCAB, 16)
        self.cell = nn.GRUCell(16, 16)
        self.out = nn.Linear(16, VOCAB)
        self.eos, self.max_len = eos, max_len

    def encode(self, x):
        return torch.tanh(self.enc(x))

    def start(self, memory):
        return memory * 0.5

    def step_fn(self, tok, h, memory):
        h = self.cell(self.emb(tok) + memory, h)
        return self.out(h), h

    def forward(self, x):
        memory = self.encode(x)
        h = self.start(memory)
        tok = torch.full((x.shape[0],), BOS, dtype=torch.long)
        finished = torch.zeros(x.shape[0], dtype=torch.bool)
        out = []
        for _ in range(self.max_len):
            logits, h = self.step_fn(tok, h, memory)
            tok = torch.where(finished, torch.full_like(tok, self.eos), logits.argmax(-1))
            finished = finished | (tok == self.eos)
            out.append(tok)
            if finished.all():
                break
        return torch.stack(out, 1)


def _spec(model, **overrides):
    fields = dict(step=model.step_fn, init_state=model.start, encode=model.encode, max_len=model.max_len,
                  bos_id=BOS, eos_id=model.eos)
    return fxopt.LoopSpec(**{**fields, **overrides})


def _early_eos_model() -> tuple[Captioner, torch.Tensor]:
    """A Captioner whose EOS is the token row 0 emits at step 1 of a run that never stops, so row 0 stops
    early and (with these inputs) some rows run longer."""
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(3))
    free = Captioner(eos=-1)(x)
    return Captioner(eos=int(free[0, 1])), x


def _padded(tokens: torch.Tensor, eos: int, max_len: int) -> torch.Tensor:
    """The model's forward output in fxopt's convention: ``[B, max_len]`` with EOS after the stop."""
    out = torch.full((tokens.shape[0], max_len), eos, dtype=tokens.dtype)
    out[:, :tokens.shape[1]] = tokens
    return out


def test_plain_capture_of_the_loop_says_to_name_its_pieces():
    model, x = _early_eos_model()
    with pytest.raises(InputError, match="decode=fxopt.LoopSpec") as err:
        fxopt.capture(model, (x,))
    assert "test_loop_spec.py:" in str(err.value) and "\n" not in str(err.value)


def test_loop_spec_captures_the_loop_and_its_tokens_equal_forward():
    model, x = _early_eos_model()
    program = fxopt.capture(model, (x,), decode=_spec(model))
    region = loops.decode_region(program)
    assert region["max_len"] == 10 and not program.notes
    expected = model(x)
    assert expected.shape[1] < 10                     # Before: the loop stops early in forward
    tokens = program.run_flat(program.flat_example_inputs())[0]
    assert torch.equal(tokens, _padded(expected, model.eos, 10))


@pytest.mark.parametrize("passes", ["unroll{mode=full}", "unroll{partition=3}", "unroll{boundaries=2:5}"])
def test_every_unroll_variant_reproduces_forward_on_new_inputs(passes):
    model, x = _early_eos_model()
    program = fxopt.capture(model, (x,), decode=_spec(model))
    compiled = fxopt.compile(fxopt.optimize(program, passes), "reference")
    other = torch.randn(4, 6, generator=torch.Generator().manual_seed(7))
    assert torch.equal(compiled(other), _padded(model(other), model.eos, 10))


def test_xla_default_pipeline_compiles_the_partitions():
    pytest.importorskip("jax")
    model, x = _early_eos_model()
    program = fxopt.capture(model, (x,), decode=_spec(model))
    compiled = fxopt.compile(fxopt.optimize(program, target="xla"), "xla")
    assert compiled.extra.get("accelerator_warning") is None
    assert torch.equal(compiled(x), _padded(model(x), model.eos, 10))


def test_method_names_and_model_attributes_fill_the_spec():
    model, x = _early_eos_model()
    model.bos_id, model.eos_id = BOS, model.eos
    program = fxopt.capture(model, (x,), decode={"step": "step_fn", "init_state": "start", "encode": "encode"})
    assert loops.decode_region(program)["max_len"] == 10
    assert torch.equal(program.run_flat(program.flat_example_inputs())[0], _padded(model(x), model.eos, 10))


def test_a_spec_that_does_not_match_forward_is_refused_naming_row_and_step():
    model, x = _early_eos_model()
    with pytest.raises(InputError, match=r"LoopSpec: the captured loop emits \d+ at row \d+, step 0, where the "
                                         r"model's forward emits \d+") as err:
        fxopt.capture(model, (x,), decode=_spec(model, bos_id=5))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, message", [
    ({"step": "decode_one"}, "LoopSpec step='decode_one': Captioner has no method 'decode_one'"),
    ({"step": 3}, "LoopSpec step must be a callable or a method name"),
    ({"bos_id": None}, "LoopSpec bos_id must be an int"),
])
def test_bad_specs_are_one_line_errors(overrides, message):
    model, x = _early_eos_model()
    with pytest.raises(InputError, match=message):
        fxopt.capture(model, (x,), decode=_spec(model, **overrides))


def test_unknown_dict_fields_are_named():
    model, x = _early_eos_model()
    with pytest.raises(InputError, match="unknown field 'stop'"):
        fxopt.capture(model, (x,), decode={"step": "step_fn", "stop": 2})


def test_the_user_model_is_left_as_it_was():
    model, x = _early_eos_model()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fxopt.capture(model, (x,), decode=_spec(model))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def captioner() -> Captioner:
    """The early-EOS Captioner (for the CLI tests' model spec ``tests/test_loop_spec.py:captioner``)."""
    return _early_eos_model()[0]


def test_cli_decode_step_names_the_methods_and_the_artifact_reproduces_forward(tmp_path, capsys):
    from fxopt.tools.cli import main

    out = tmp_path / "art"
    code = main(["run", f"{__file__}:captioner", "--input", "float32[4,6]", "--no-cache", "-o", str(out),
                 "--decode", "step=step_fn,init_state=start,encode=encode,max_len=10,bos_id=1,eos_id=10",
                 "--passes", "unroll{partition=4}"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "decode loop: 10 steps unrolled into 3 partitions of 4/4/2 steps" in stdout
    model, x = _early_eos_model()
    assert torch.equal(fxopt.load(str(out))(x), _padded(model(x), model.eos, 10))


@pytest.mark.parametrize("value, message", [("step=step_fn,stop=2", "with step=, expected KEY=VALUE"),
                                            ("step=a.b", "step: expected a method name"),
                                            ("step=step_fn,bos_id=x", "bos_id: expected an integer")])
def test_cli_bad_loop_settings_are_usage_errors(value, message, capsys):
    from fxopt.tools.cli import main

    assert main(["run", "zoo:ranking", "--decode", value]) == 2
    assert message in capsys.readouterr().err


def test_xla_pieces_keep_the_state_on_the_device_between_calls(monkeypatch):
    pytest.importorskip("jax")
    from fxopt.backends.xla import lower

    model, x = _early_eos_model()
    program = fxopt.capture(model, (x,), decode=_spec(model))
    compiled = fxopt.compile(fxopt.optimize(program, "unroll{partition=1}", target="xla"), "xla")
    compiled(x)
    converted = []
    to_torch = lower.to_torch
    monkeypatch.setattr(lower, "to_torch", lambda a: converted.append(str(getattr(a, "dtype", ""))) or to_torch(a))
    assert torch.equal(compiled(x), _padded(model(x), model.eos, 10))
    assert compiled.last_calls >= 4 and converted      # Before: every float state and memory tensor, every call
    assert all(d in ("int64", "bool") for d in converted), converted   # Expected: tokens and finished flags only


class _WithBosColumn(Captioner):
    def forward(self, x):
        tokens = super().forward(x)
        return torch.cat([torch.full((x.shape[0], 1), BOS), tokens], 1)


class _ReturnsScores(Captioner):
    def forward(self, x):
        return super().forward(x).float()


def test_a_forward_that_returns_the_bos_column_too_is_compared_after_it():
    model, x = _early_eos_model()
    bos_model = _WithBosColumn(eos=model.eos)
    program = fxopt.capture(bos_model, (x,), decode=_spec(bos_model))
    assert not program.notes


def test_a_forward_that_does_not_return_tokens_is_not_compared_and_says_so():
    model, x = _early_eos_model()
    scores = _ReturnsScores(eos=model.eos)
    program = fxopt.capture(scores, (x,), decode=_spec(scores))
    assert program.notes == ["LoopSpec: _ReturnsScores's forward does not return tokens [batch, steps], so the "
                             "captured loop was not compared with it"]
