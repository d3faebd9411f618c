"""Pipeline text and pass options: parsed, typed and validated with one-line errors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from fxopt.errors import InputError
from fxopt.passes.base import Pass, PassResult
from fxopt.passes.registry import build_pipeline, parse_pipeline, register_pass, unregister_pass


@dataclass(frozen=True)
class _Options(Pass):
    """A pass with one option of each kind."""

    name = "test-options"
    partition: int = 25
    ratio: float = 0.5
    enabled: bool = True
    mode: Literal["full", "partitioned"] = "partitioned"
    label: str = "x"

    def __post_init__(self):
        if self.partition <= 0:
            raise ValueError("partition must be positive")

    def run(self, program):
        return PassResult(modified=False)


@pytest.fixture
def options_pass():
    register_pass(_Options)
    yield _Options
    unregister_pass(_Options.name)


def test_parse_pipeline_with_options():
    assert parse_pipeline("dce,unroll{partition=25,max_len=75},dedupe") == [
        ("dce", {}), ("unroll", {"partition": "25", "max_len": "75"}), ("dedupe", {})]


def test_parse_pipeline_tolerates_spaces():
    assert parse_pipeline(" dce , canonicalize{ } ") == [("dce", {}), ("canonicalize", {})]


@pytest.mark.parametrize("text, words", [
    ("dce{partition=1", "never closed"),
    ("dce{partition}", "key=value"),
    ("Fold_Constants", "not a pass name"),
    ("dce{a=1,a=2}", "given twice"),
    ("dce{a=1}x", "expected ','"),
])
def test_malformed_pipelines_are_rejected(text, words):
    with pytest.raises(InputError, match=words):
        parse_pipeline(text)


def test_options_are_converted_to_their_types(options_pass):
    (p,) = build_pipeline("test-options{partition=10,ratio=2,enabled=false,mode=full,label=abc}")
    assert (p.partition, p.ratio, p.enabled, p.mode, p.label) == (10, 2.0, False, "full", "abc")


def test_spec_round_trips_non_default_options(options_pass):
    (p,) = build_pipeline("test-options{partition=10,enabled=false}")
    assert p.spec() == "test-options{partition=10,enabled=false}"
    assert build_pipeline(p.spec())[0] == p


@pytest.mark.parametrize("text, words", [
    ("test-options{partition=ten}", "must be an integer"),
    ("test-options{enabled=maybe}", "must be true or false"),
    ("test-options{mode=half}", "not one of full, partitioned"),
    ("test-options{colour=red}", "has no option 'colour'"),
    ("test-options{partition=0}", "partition must be positive"),
])
def test_bad_options_name_the_pass_and_option(options_pass, text, words):
    with pytest.raises(InputError) as info:
        build_pipeline(text)
    assert words in str(info.value) and "test-options" in str(info.value)


def test_unknown_pass_lists_known_ones():
    with pytest.raises(InputError) as info:
        build_pipeline("dce,no-such-pass")
    assert "no-such-pass" in str(info.value) and "canonicalize" in str(info.value)


def test_list_of_names_and_instances(options_pass):
    pipeline = build_pipeline(["dce", "test-options{partition=3}", _Options(partition=4)])
    assert [p.spec() for p in pipeline] == ["dce", "test-options{partition=3}", "test-options{partition=4}"]


def test_registering_a_non_kebab_name_fails():
    @dataclass(frozen=True)
    class Bad(Pass):
        name = "BadName"

    with pytest.raises(ValueError):
        register_pass(Bad)
