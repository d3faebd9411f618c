"""GenerationSpec on Hugging Face causal LMs (GPT-2, Llama): tokens equal ``generate`` in every variant
(tests/generation_tests.py), and the settings fxopt cannot reproduce are refused in one line."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

import fxopt  # noqa: E402
from fxopt.errors import InputError  # noqa: E402

import generation_cases as cases  # noqa: E402
from generation_tests import GenerationTests, case_params, make_case  # noqa: E402


@pytest.fixture(scope="module", params=case_params(["gpt2", "llama"]))
def case(request):
    return make_case(request)


class TestCausalLM(GenerationTests):
    """GPT-2 (learned positions) and Llama (rotary, grouped-query attention, whose step needs Dim.DYNAMIC)."""


def test_dict_spec_captures_like_a_generation_spec():
    model, inputs = cases.gpt2(), cases.prompt("gpt2", 1)
    program = fxopt.capture(model, inputs, decode={"max_new_tokens": 4})
    got = fxopt.as_generate(program.run_flat(program.flat_example_inputs())[0],
                            program.regions[0]["generation"], inputs[0])
    with torch.no_grad():
        assert torch.equal(got, model.generate(inputs[0], do_sample=False, max_new_tokens=4))


@pytest.mark.parametrize("setting, value", [("num_beams", 2), ("repetition_penalty", 1.3),
                                            ("no_repeat_ngram_size", 2)])
def test_settings_that_change_greedy_decoding_are_refused_naming_them(setting, value):
    model = cases.gpt2()
    setattr(model.generation_config, setting, value)
    with pytest.raises(InputError, match=f"generation_config.{setting}={value}") as err:
        fxopt.capture(model, cases.prompt("gpt2", 1), decode={"max_new_tokens": 4})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec, message", [
    ({"max_new_tokens": 1}, "max_new_tokens must be an int >= 2"),
    ({"max_new_tokens": 4, "eos_token_id": [1, 2]}, "eos_token_id=\\[1, 2\\] has 2 ids"),
    ({"max_new_tokens": 4, "beams": 2}, "unknown field 'beams'"),
    ({"eos_token_id": 1}, "max_new_tokens is required"),
])
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(InputError, match=message):
        fxopt.capture(cases.gpt2(), cases.prompt("gpt2", 1), decode=spec)


def test_a_model_that_is_not_a_generation_model_is_refused():
    with pytest.raises(InputError, match="needs a Hugging Face generation model"):
        fxopt.capture(torch.nn.Linear(4, 4), (torch.zeros(1, 4, dtype=torch.long),), decode={"max_new_tokens": 4})


def test_the_user_model_is_left_as_it_was():
    model = cases.llama()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cases.capture(model, cases.prompt("llama", 4), {})
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


GPT2_FILE = '''
import torch
from transformers import GPT2Config, GPT2LMHeadModel


def model():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_inner=64,
                                      n_positions=64, bos_token_id=0, eos_token_id=0)).eval()
'''


def test_cli_decode_compiles_generate_for_xla_and_the_artifact_reproduces_its_tokens(tmp_path, capsys):
    from fxopt.tools.cli import main

    path = tmp_path / "lm.py"
    path.write_text(GPT2_FILE)
    out = tmp_path / "art"
    code = main(["run", f"{path}:model", "--input", "int64[2,6]:3..100", "--decode", "max_len=6",
                 "--backend", "xla", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    loaded = fxopt.load(str(out))
    ids = torch.randint(3, 100, (2, 6))
    from fxopt.ir.capture import resolve_model
    model = resolve_model(f"{path}:model", ())[0]
    with torch.no_grad():
        expected = model.generate(ids, do_sample=False, max_new_tokens=6)
    program = fxopt.capture(model, (ids,), decode={"max_new_tokens": 6})
    assert torch.equal(fxopt.as_generate(loaded(ids), program.regions[0]["generation"], ids), expected)


@pytest.mark.parametrize("value, message", [("max_len=1", "max_new_tokens must be >= 2"),
                                            ("eos_token_id=2", "give max_new_tokens"),
                                            ("beams=2", "expected KEY=INT"),
                                            ("max_len=x", "expected an integer")])
def test_cli_bad_decode_settings_are_usage_errors(value, message, capsys):
    from fxopt.tools.cli import main

    assert main(["run", "zoo:ranking", "--decode", value]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_lengths_chooses_boundaries_and_reports_the_expected_calls(tmp_path, capsys):
    from fxopt.tools.cli import main

    path = tmp_path / "lm.py"
    path.write_text(GPT2_FILE)
    lengths = tmp_path / "lengths.json"
    lengths.write_text("[2, 2, 2, 3, 3, 8]")
    code = main(["run", f"{path}:model", "--input", "int64[1,6]:3..100", "--decode", "max_len=8",
                 "--lengths", str(lengths), "--passes", "unroll", "--no-cache", "-o", str(tmp_path / "art")])
    out, err = capsys.readouterr()
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("decode loop: "))
    assert "7 steps unrolled into" in line and "expected per request from the lengths" in line


@pytest.mark.parametrize("argv, message", [
    (["--lengths", "{lengths}"], "the pipeline has no unroll pass"),
    (["--lengths", "{lengths}", "--passes", "unroll{{mode=full}}"], "unroll{mode=full} makes one graph"),
    (["--lengths", "{missing}", "--passes", "unroll"], "no such file"),
])
def test_cli_bad_lengths_fail_before_capture(tmp_path, argv, message, capsys):
    from fxopt.tools.cli import main

    lengths = tmp_path / "lengths.json"
    lengths.write_text("[2, 3]")
    argv = [a.format(lengths=lengths, missing=tmp_path / "nope.json") for a in argv]
    path = tmp_path / "lm.py"
    path.write_text(GPT2_FILE.replace("def model():", "def model():\n    raise AssertionError('captured')"))
    assert main(["run", f"{path}:model", "--decode", "max_len=4", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_dynamic_batch_capture_decodes_other_batches_exactly():
    from generation_tests import check_dynamic_batch

    check_dynamic_batch("llama")


def test_xla_full_unroll_is_one_accelerator_graph_with_generates_tokens():
    pytest.importorskip("jax")
    model, inputs = cases.gpt2(), cases.prompt("gpt2", 4)
    settings = cases.early_eos("gpt2", model, inputs)
    program = cases.capture(model, inputs, settings)
    compiled = fxopt.compile(fxopt.optimize(program, "unroll{mode=full},split{target=xla,policy=support}"), "xla")
    assert [s.runtime for s in compiled.stages] == ["jax-xla"]     # encoder and every step: one XLA executable
    assert torch.equal(cases.as_generate(program, compiled(*inputs), inputs), cases.generate(model, inputs, **settings))
