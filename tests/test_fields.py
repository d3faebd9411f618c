"""fxopt.Fields and neutral output structures: what a saved artifact returns where the model's own output
classes are not available (ir/fields.py, backends/base.py)."""
from __future__ import annotations

import collections
import json
import os
import pickle
import subprocess
import sys
import textwrap

import torch
import torch.utils._pytree as pytree

import fxopt
from fxopt.ir.fields import Fields, neutral_spec

Pair = collections.namedtuple("Pair", ["scores", "embedding"])


class NamedTupleOut(torch.nn.Module):
    """Returns a namedtuple (pytree cannot serialize its spec unless the user registers it)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        h = self.lin(x)
        return Pair(scores=h.softmax(-1), embedding=h)


def test_fields_reads_by_name_key_and_position():
    f = Fields([("logits", torch.ones(2)), ("hidden", torch.zeros(3))], type_name="Out")
    assert f.logits is f["logits"] is f[0]
    assert f[1:] == (f.hidden,)
    assert list(f) == ["logits", "hidden"] and f.type_name == "Out"
    assert repr(f).startswith("Out(logits=")


def test_a_field_named_like_a_dict_method_reads_as_the_field():
    layer = Fields([("keys", torch.ones(1)), ("values", torch.zeros(1))], type_name="DynamicLayer")
    assert torch.equal(layer.keys, torch.ones(1)) and torch.equal(layer.values, torch.zeros(1))
    assert layer.to_tuple() == (layer[0], layer[1])


def test_fields_pickles_and_flattens_with_pytree():
    f = Fields([("a", torch.arange(3)), ("b", (torch.ones(1), torch.zeros(1)))], type_name="Out")
    leaves, spec = pytree.tree_flatten(f)
    assert len(leaves) == 3
    back = pytree.tree_unflatten(leaves, spec)
    assert isinstance(back, Fields) and back.type_name == "Out" and list(back) == ["a", "b"]
    assert pytree.treespec_loads(pytree.treespec_dumps(spec)) == spec
    again = pickle.loads(pickle.dumps(f))
    assert again.type_name == "Out" and torch.equal(again.a, f.a)


def test_neutral_spec_turns_a_namedtuple_into_fields_with_its_field_names():
    spec = pytree.tree_flatten((Pair(torch.ones(1), torch.ones(2)), [torch.ones(3)]))[1]
    neutral = neutral_spec(spec)
    rebuilt = pytree.tree_unflatten([1, 2, 3], neutral)
    assert isinstance(rebuilt, tuple) and isinstance(rebuilt[1], list)
    assert isinstance(rebuilt[0], Fields) and rebuilt[0].type_name == "Pair"
    assert (rebuilt[0].scores, rebuilt[0].embedding) == (1, 2)


def test_a_namedtuple_output_is_saved_and_loads_as_fields(tmp_path):
    model = NamedTupleOut().eval()
    x = torch.randn(2, 4)
    compiled = fxopt.compile(fxopt.capture(model, (x,)))
    path = compiled.save(str(tmp_path / "art"))
    with open(os.path.join(path, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["out_spec"] is None and "fxopt.Fields" in manifest["out_structure"]
    out = fxopt.load(path)(x)
    want = model(x)
    assert isinstance(out, Fields) and out.type_name == "Pair"
    torch.testing.assert_close(out.scores, want.scores)
    torch.testing.assert_close(out[1], want.embedding)


def test_an_output_class_unknown_to_the_loading_process_becomes_fields(tmp_path):
    # the artifact's output class is registered with pytree only in the process that saved it
    script = tmp_path / "save.py"
    script.write_text(textwrap.dedent(f"""
        import dataclasses, torch, torch.utils._pytree as pytree, fxopt

        @dataclasses.dataclass
        class Scores:
            best: torch.Tensor
            all: torch.Tensor

        pytree.register_dataclass(Scores, serialized_type_name="userlib.Scores")

        class Net(torch.nn.Module):
            def forward(self, x):
                return Scores(best=x.amax(-1), all=x * 2)

        x = torch.arange(6.0).reshape(2, 3)
        fxopt.compile(fxopt.capture(Net(), (x,))).save({str(tmp_path / "art")!r})
        reloaded = fxopt.load({str(tmp_path / "art")!r})(x)
        assert type(reloaded).__name__ == "Scores", type(reloaded)   # same process: the class itself
    """))
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True, timeout=300)
    out = fxopt.load(str(tmp_path / "art"))(torch.arange(6.0).reshape(2, 3))
    assert isinstance(out, Fields) and out.type_name == "Scores"
    assert torch.equal(out.best, torch.tensor([2.0, 5.0])) and torch.equal(out.all, torch.arange(6.0).reshape(2, 3) * 2)
