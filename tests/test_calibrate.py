"""Device profile files (fxopt.ir.device_files) and ``fxopt calibrate`` (fxopt.tools.calibrate).

Calibration runs with tiny budgets here: the figures are checked for sign and kind, not for size.
"""
from __future__ import annotations

import json
import os

import pytest

from fxopt.errors import InputError
from fxopt.ir import device_files
from fxopt.ir.device_files import load_profile, resolve_profile, save_profile
from fxopt.ir.devices import CPU, INF2, PROFILES, DeviceProfile
from fxopt.tools.calibrate import calibrate_cpu
from fxopt.tools.cli import main

OPS = ("matmul", "conv2d", "add", "index_select", "copy")


# ------------------------------------------------------------------------------------------ files
@pytest.mark.parametrize("profile", [CPU, INF2], ids=["cpu", "inf2"])
def test_save_load_round_trip_is_equal(tmp_path, profile):
    path = tmp_path / "p.json"
    assert save_profile(profile, path, {"note": "x"}) == str(path)
    assert load_profile(path) == profile
    data = json.loads(path.read_text())
    assert data["format"] == "fxopt-device-profile" and data["version"] == 1
    assert data["profile"] == profile.to_json() and data["measurements"] == {"note": "x"}
    assert not [p for p in os.listdir(tmp_path) if p != "p.json"]   # no temporary file left behind


def _write(tmp_path, data, name="bad.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def _doc(**changes):
    profile = CPU.to_json()
    for key, value in changes.items():
        if value is _DROP:
            profile.pop(key)
        else:
            profile[key] = value
    return {"format": "fxopt-device-profile", "version": 1, "profile": profile, "measurements": {}}


_DROP = object()


@pytest.mark.parametrize("content, words", [
    ("{not json", "not a JSON device profile"),
    ([1, 2], "not an fxopt device profile"),
    ({"format": "something-else", "version": 1, "profile": {}}, "not an fxopt device profile"),
    ({"format": "fxopt-device-profile", "version": 99, "profile": CPU.to_json()}, "newer"),
    ({"format": "fxopt-device-profile", "version": 1}, "lacks the \"profile\""),
    (_doc(peak_flops=_DROP), "lacks 'peak_flops'"),
    (_doc(mem_bandwidth=0), "'mem_bandwidth' must be positive"),
    (_doc(link_bandwidth=-1.0), "'link_bandwidth' must be positive"),
    (_doc(peak_flops="fast"), "'peak_flops' must be a finite number"),
    (_doc(peak_flops=True), "'peak_flops' must be a finite number"),
    (_doc(link_latency=-1e-6), "'link_latency' must be >= 0"),
    (_doc(kind="gpu"), "'kind' must be one of cpu, accelerator"),
    (_doc(name=""), "lacks a 'name'"),
], ids=["json", "not-object", "format", "version", "no-profile", "missing", "zero", "negative", "string", "bool",
        "latency", "kind", "name"])
def test_a_bad_file_is_one_input_error_naming_it(tmp_path, content, words):
    path = _write(tmp_path, content)
    with pytest.raises(InputError) as info:
        load_profile(path)
    message = str(info.value)
    assert "\n" not in message and path in message and words in message, message
    assert "fxopt calibrate" in message or "upgrade" in message or "check" in message


def test_a_missing_file_says_how_to_write_one(tmp_path):
    path = str(tmp_path / "none.json")
    with pytest.raises(InputError, match="no such device profile file") as info:
        load_profile(path)
    assert path in str(info.value) and "fxopt calibrate --device cpu" in str(info.value)


def test_resolve_profile_takes_names_and_files(tmp_path):
    assert resolve_profile("inf2") is PROFILES["inf2"] and resolve_profile(" CPU ") is CPU
    assert resolve_profile(INF2) is INF2
    custom = DeviceProfile("mine", 1e12, 1e11, 1e10, 1e-5, "accelerator", description="test")
    path = save_profile(custom, tmp_path / "mine.json")
    assert resolve_profile(path) == custom and resolve_profile(tmp_path / "mine.json") == custom
    os.rename(path, tmp_path / "mine")
    assert resolve_profile(str(tmp_path / "mine")) == custom   # a "/" makes it a path
    assert device_files.is_profile_path("x.json") and device_files.is_profile_path("./x")
    assert not device_files.is_profile_path("inf2")
    with pytest.raises(InputError, match="unknown device profile"):
        resolve_profile("nope")
    with pytest.raises(InputError, match="no such device profile file"):
        resolve_profile("nope.json")


# ------------------------------------------------------------------------------------------ calibration
def test_calibrate_cpu_with_a_tiny_budget_gives_positive_figures():
    profile, measurements = calibrate_cpu(budget_s=0.01)
    assert profile.kind == "cpu" and profile.precision == "fp32"
    for value in (profile.peak_flops, profile.mem_bandwidth, profile.link_bandwidth, profile.peak_flops_fp32):
        assert value > 0
    assert profile.link_latency == 0.0
    ops = measurements["ops"]
    assert set(ops) == set(OPS)
    for op in OPS:
        assert ops[op]["seconds"] > 0 and ops[op]["repeats"] >= 3 and ops[op]["bytes_per_s"] > 0
    assert profile.peak_flops == max(ops["matmul"]["flop_per_s"], ops["conv2d"]["flop_per_s"])
    assert profile.mem_bandwidth == ops["add"]["bytes_per_s"]
    assert ops["add"]["bytes"] == 3 * 8 * 1024 * 1024 * 4   # two inputs read, one output written
    assert str(os.cpu_count()) in profile.description and measurements["date"] in profile.description
    json.dumps(measurements, allow_nan=False)   # JSON-ready
    with pytest.raises(ValueError):
        calibrate_cpu(budget_s=0)


# ------------------------------------------------------------------------------------------ the command
def test_cli_calibrate_writes_a_profile_split_can_read(tmp_path, capsys):
    out = tmp_path / "host.json"
    assert main(["calibrate", "--device", "cpu", "--budget", "0.01", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    profile = load_profile(out)
    assert profile.kind == "cpu" and profile.peak_flops > 0
    assert "split{cpu_profile=" in printed
    for op in OPS:
        assert op in printed
    assert set(json.loads(out.read_text())["measurements"]["ops"]) == set(OPS)


def test_cli_calibrate_default_out_is_in_the_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", "--budget", "0.01"]) == 0
    assert load_profile(tmp_path / "cpu-profile.json").kind == "cpu"
    assert "split{cpu_profile=cpu-profile.json}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["calibrate", "--device", "neuron"], "only the cpu can be calibrated"),
    (["calibrate", "--budget", "0"], "expected seconds > 0"),
    (["calibrate", "--out", "/no/such/dir/p.json"], "not a file in an existing directory"),
])
def test_cli_calibrate_bad_arguments_exit_2(tmp_path, monkeypatch, capsys, argv, words):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]   # argparse also prints its usage
    assert len(errors) == 1 and words in errors[0], err
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------------------ split reads the file
@pytest.fixture(scope="module")
def ranking_small():
    import fxopt
    from fxopt.zoo import get
    model, inputs = get("ranking", small=True)
    return fxopt.capture(model, inputs)


def _run_split(program, **options):
    from fxopt.passes.split import Split
    work = program.copy()
    return Split(**options).run(work), work


def test_split_cpu_profile_file_replaces_the_cpu_side(tmp_path, ranking_small):
    slow = dataclasses_replace(CPU, name="slow-host", peak_flops=CPU.peak_flops / 10,
                               mem_bandwidth=CPU.mem_bandwidth / 10)
    path = save_profile(slow, tmp_path / "slow.json")
    base, _ = _run_split(ranking_small, target="xla")
    calibrated, work = _run_split(ranking_small, target="xla", cpu_profile=path)
    # all-CPU time is a roofline of the CPU profile alone: a 10x slower host is exactly 10x slower there
    assert calibrated.details["estimate"]["before"] == pytest.approx(10 * base.details["estimate"]["before"],
                                                                     rel=1e-3)
    assert calibrated.details["estimate"]["after"] <= calibrated.details["estimate"]["before"]


def test_split_profile_file_of_an_accelerator_is_used_by_name(tmp_path, ranking_small):
    path = save_profile(dataclasses_replace(INF2, name="my-inf2"), tmp_path / "acc.json")
    result, work = _run_split(ranking_small, target="neuron", profile=path)
    from fxopt.passes.split import partitions_region
    assert partitions_region(work)["profile"] == "my-inf2"


@pytest.mark.parametrize("option, kind, words", [
    ("profile", "cpu", "is a CPU; pass a CPU profile file as cpu_profile="),
    ("cpu_profile", "accelerator", "is an accelerator profile"),
])
def test_split_refuses_a_profile_file_of_the_other_kind(tmp_path, option, kind, words):
    from fxopt.passes.split import Split
    path = save_profile(CPU if kind == "cpu" else INF2, tmp_path / "p.json")
    with pytest.raises(InputError, match=words) as err:
        Split(**{option: path})
    assert "\n" not in str(err.value)


def test_split_missing_profile_file_is_one_line_naming_it(tmp_path):
    from fxopt.passes.split import Split
    missing = str(tmp_path / "nope.json")
    with pytest.raises(InputError, match=r"cpu_profile=.*nope\.json.*fxopt calibrate") as err:
        Split(cpu_profile=missing)
    assert "\n" not in str(err.value)


def test_cli_run_with_a_missing_profile_file_exits_2_before_capture(tmp_path, capsys):
    code = main(["run", "--passes", f"split{{cpu_profile={tmp_path / 'nope.json'}}}", "zoo:ranking", "--small",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.json" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def dataclasses_replace(profile, **changes):
    import dataclasses
    return dataclasses.replace(profile, **changes)
