"""The ``fxopt`` command line: ``run``, ``passes``, ``inspect``, ``zoo``.

``main(argv)`` parses the arguments, runs one subcommand and returns the exit code:

- 0 on success;
- 1 when a check failed (:class:`~fxopt.errors.VerificationError`: a pass changed the numerics, or the
  compiled artifact does not reproduce the captured model; or ``run --require-accelerator`` and the
  accelerator artifact does no, or too little, accelerator work: it is still written);
- 2 for bad input (:class:`~fxopt.errors.InputError`, other :class:`~fxopt.errors.FxoptError` subclasses
  with their own ``exit_code``, and argparse usage errors);
- 3 for an internal error (any other exception: a bug in fxopt or in a pass);
- 130 when interrupted.

Errors are printed as ONE line on stderr (``fxopt: error: ...``); ``--debug`` (before or after the
subcommand) prints the traceback as well and lets torch's own warnings through.

Verification in ``fxopt run``: by default the pass manager checks every pass that changed the graph (lint +
a differential run against the graph before it). ``--no-verify`` turns those per-pass checks off, but the
final artifact check always runs: the compiled artifact is run on the example inputs and compared with the
program as captured, before anything is saved. So a wrong pass still fails the run with ``--no-verify`` (exit
1, no output directory written); it is only no longer named.
"""
from __future__ import annotations

# local imports: commands import torch and the compiler only when they run, so `fxopt --help` and argument errors answer without them (startup cost)
import argparse
import contextlib
import io
import logging
import os
import re
import sys
import time
import traceback
import warnings
from typing import Any, Sequence

EXIT_OK = 0
EXIT_NO_ACCELERATOR = 1  # run --require-accelerator: the artifact (written) does too little accelerator work
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a process killed by a closed pipe

# Subcommands that live in their own modules. Each module has ``register(add)``: it calls
# ``add(name, help_text, description)`` to get its argparse sub-parser, adds its arguments, and sets
# ``handler=`` (a function ``args -> exit code``). Modules must import heavy dependencies lazily.
COMMAND_MODULES: tuple[str, ...] = (
    "fxopt.tools.bench_cli",
    "fxopt.tools.bisect",
    "fxopt.tools.calibrate",
    "fxopt.tools.fleet.cli",
    "fxopt.tools.viz",
)


# ------------------------------------------------------------------------------------------ arguments
class NumberArg:
    """argparse ``type=``: ``convert`` (int or float) the text, then require ``accept(value)``; both failures
    are "expected <what>, got <text>" (argparse prints it as a usage error, exit 2)."""

    def __init__(self, convert, accept, what: str, name: str):
        self.convert, self.accept, self.what = convert, accept, what
        self.__name__ = name

    def __call__(self, text: str):
        try:
            value = self.convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.what}, got {text!r}") from None
        if not self.accept(value):
            raise argparse.ArgumentTypeError(f"expected {self.what}, got {text}")
        return value


_NON_NEGATIVE_INT = NumberArg(int, lambda v: v >= 0, "a non-negative integer", "non-negative integer")
_POSITIVE_INT = NumberArg(int, lambda v: v >= 1, "a positive integer", "positive integer")
_FRACTION = NumberArg(float, lambda v: 0.0 <= v <= 1.0, "a number from 0 to 1", "fraction")


class _DecodeType:
    """argparse ``type=`` for ``--decode``. ``max_new_tokens=20,eos_token_id=2`` (``max_len`` is the same as
    ``max_new_tokens``) -> a GenerationSpec's fields (ints); with ``step=METHOD`` -> a LoopSpec's fields
    (``step``/``init_state``/``encode`` method names, ``max_len``/``bos_id``/``eos_id`` ints)."""

    __name__ = "decode settings"
    KEYS = ("max_new_tokens", "eos_token_id", "pad_token_id", "decoder_start_token_id", "min_new_tokens")
    LOOP_NAMES = ("step", "init_state", "encode")
    LOOP_INTS = ("max_len", "bos_id", "eos_id")

    def __call__(self, text: str) -> dict:
        pairs = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, eq, value = part.partition("=")
            if not eq:
                raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {part!r}")
            pairs.append((key.strip(), value.strip(), part))
        if any(key == "step" for key, _, _ in pairs):
            return self._loop(pairs)
        return self._generation(pairs)

    def _loop(self, pairs: list) -> dict:
        out: dict = {}
        for key, value, part in pairs:
            if key in self.LOOP_NAMES:
                if not value.isidentifier():
                    raise argparse.ArgumentTypeError(f"{key}: expected a method name, got {value!r}")
                out[key] = value
            elif key in self.LOOP_INTS:
                out[key] = self._int(key, value)
            else:
                raise argparse.ArgumentTypeError(f"with step=, expected KEY=VALUE with KEY one of "
                                                 f"{', '.join(self.LOOP_NAMES + self.LOOP_INTS)}; got {part!r}")
        return out

    def _generation(self, pairs: list) -> dict:
        out: dict = {}
        for key, value, part in pairs:
            key = {"max_len": "max_new_tokens"}.get(key, key)
            if key not in self.KEYS:
                raise argparse.ArgumentTypeError(f"expected KEY=INT with KEY one of max_len, {', '.join(self.KEYS)} "
                                                 f"(or step=METHOD for a model's own loop); got {part!r}")
            out[key] = self._int(key, value)
        if "max_new_tokens" not in out:
            raise argparse.ArgumentTypeError("give max_new_tokens (or max_len), e.g. --decode max_new_tokens=20")
        if out["max_new_tokens"] < 2:
            raise argparse.ArgumentTypeError(f"max_new_tokens must be >= 2, got {out['max_new_tokens']}")
        return out

    @staticmethod
    def _int(key: str, value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{key}: expected an integer, got {value!r}") from None


class _PriceType:
    """argparse ``type=`` for ``--price``: ``cpu=0.17,neuron=0.29`` (US$/h; the accelerator as ``acc`` or its
    target's name) -> ``{"cpu": float, "acc": float, "acc_name": str | None}`` (missing ones absent)."""

    __name__ = "prices"
    KEYS = ("cpu", "acc", "neuron", "tensorrt", "xla")

    def __call__(self, text: str) -> dict:
        out: dict = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, eq, value = part.partition("=")
            key = key.strip().lower()
            if not eq or key not in self.KEYS:
                raise argparse.ArgumentTypeError(f"expected DEVICE=US$_PER_HOUR with DEVICE one of "
                                                 f"{', '.join(self.KEYS)}, got {part!r}")
            try:
                price = float(value)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{key}: expected a price in US$/h, got {value!r}") from None
            if not 0 < price < float("inf"):
                raise argparse.ArgumentTypeError(f"{key}: a price must be > 0 US$/h, got {value}")
            slot = "cpu" if key == "cpu" else "acc"
            if slot in out:
                raise argparse.ArgumentTypeError(f"two prices for the {'CPU' if slot == 'cpu' else 'accelerator'}")
            out[slot] = price
            if slot == "acc" and key != "acc":
                out["acc_name"] = key
        if not out:
            raise argparse.ArgumentTypeError("give at least one price, e.g. cpu=0.17,neuron=0.29")
        return out


def with_prices(pipeline: list, prices: dict | None, target: str) -> list:
    """``pipeline`` with every ``split`` pass placing by US$ per request (``objective=cost``) at ``prices``
    (from ``--price``); unchanged when ``prices`` is None. Raises InputError when there is no split pass, or
    the price names another accelerator than ``target``."""
    import dataclasses

    from fxopt.errors import InputError

    if not prices:
        return pipeline
    if prices.get("acc_name") not in (None, target):
        raise InputError(f"--price {prices['acc_name']}=...: this run compiles for {target}; give {target}= "
                         f"(or acc=) for the accelerator's price")
    if not any(p.name == "split" for p in pipeline):
        raise InputError("--price sets split's prices, but the pipeline has no split pass; add "
                         "split{target=...} to --passes")
    changes = {"objective": "cost"}
    if "cpu" in prices:
        changes["price_cpu"] = prices["cpu"]
    if "acc" in prices:
        changes["price_acc"] = prices["acc"]
    return [dataclasses.replace(p, **changes) if p.name == "split" else p for p in pipeline]


# The device profile unroll's boundaries=auto costs steps with, per target, when --passes leaves it default.
_LENGTHS_DEVICE = {"reference": "cpu", "xla": "cpu", "tensorrt": "t4"}


def with_lengths(pipeline: list, lengths: str | None, target: str) -> list:
    """``pipeline`` with every partitioned ``unroll`` pass choosing its boundaries from the output-length
    histogram in ``lengths`` (``--lengths``; explicit ``boundaries=10:30`` are kept and costed against it);
    unchanged when ``lengths`` is None. The file is read here, before capture. Raises InputError when the
    pipeline has no partitioned unroll pass or the file is not a list of lengths."""
    import dataclasses

    from fxopt.errors import InputError
    from fxopt.passes.unroll.boundaries import read_lengths

    if not lengths:
        return pipeline
    unrolls = [p for p in pipeline if p.name == "unroll"]
    if not unrolls:
        raise InputError("--lengths sets unroll's boundaries, but the pipeline has no unroll pass; add unroll to "
                         "--passes")
    if all(p.mode == "full" for p in unrolls):
        raise InputError("--lengths chooses partition boundaries, but unroll{mode=full} makes one graph; drop "
                         "mode=full or --lengths")
    read_lengths(lengths, 1)   # a missing or malformed file fails now, not after the capture
    default_device = type(unrolls[0])().device

    def changed(p):
        if p.name != "unroll" or p.mode == "full":
            return p
        device = _LENGTHS_DEVICE.get(target, p.device) if p.device == default_device else p.device
        return dataclasses.replace(p, boundaries=p.boundaries or "auto", lengths=lengths, device=device)

    return [changed(p) for p in pipeline]


class _InputSpecType:
    """argparse ``type=`` for ``--input``: parsed (and checked) before torch is imported."""

    __name__ = "input spec"

    def __call__(self, text: str):
        from fxopt.errors import InputError
        from fxopt.tools.model_inputs import parse_input_spec

        try:
            return parse_input_spec(text)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--input {text!r}: ")) from None


def add_model_input_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--small``, ``--input`` and ``--inputs`` (what the model runs on) to a command taking a MODEL."""
    p.add_argument("--small", action="store_true",
                   help="a zoo model's small variant (zoo:NAME only; the same as zoo:NAME{small=true})")
    p.add_argument("--input", action="append", metavar="[NAME=]DTYPE[DIMS][:LOW..HIGH]", type=_InputSpecType(),
                   help="an example input instead of the model's example_inputs(), e.g. 'x=float32[8,128]' or "
                        "'ids=int64[8,20]:0..5000' (repeat per forward argument; named ones bind by name)")
    p.add_argument("--inputs", metavar="FILE.pt",
                   help="example inputs saved with torch.save: a tensor, a tuple/list of tensors, or a dict of "
                        "them by argument name (read with weights_only=True: no code runs)")


def model_request(args: argparse.Namespace) -> tuple[str, Any]:
    """``(model spec, inputs)`` from a command's MODEL, ``--small``, ``--input`` and ``--inputs``: the spec
    with ``{small=true}`` added for ``--small``, and None or a function of the resolved model making its
    inputs. Checked without importing torch; raises InputError."""
    from fxopt.errors import InputError
    from fxopt.tools.model_inputs import check_input_specs, check_inputs_file, inputs_maker

    spec = args.model
    if getattr(args, "small", False):
        if not spec.startswith("zoo:"):
            raise InputError(f"--small applies to zoo:NAME models only, not {spec!r}")
        if "{" in spec:
            raise InputError(f"{spec}: give small=true inside the braces or --small, not both")
        spec += "{small=true}"
    specs = check_input_specs(getattr(args, "input", None) or [])   # each parsed by argparse already
    check_inputs_file(getattr(args, "inputs", None))
    maker = inputs_maker(specs, getattr(args, "inputs", None))
    batch = getattr(args, "deploy_batch", None)
    if batch is not None:
        from fxopt.tools.model_inputs import rebatching_maker
        maker = rebatching_maker(maker, batch)
    return spec, maker


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``fxopt`` and its subcommands (``args.command`` names the subcommand)."""
    from fxopt.tools.catalog import current
    from fxopt.version import __version__

    backend_names = current()["backends"]

    parser = argparse.ArgumentParser(
        prog="fxopt",
        description="fxopt: a graph-rewriting compiler for PyTorch inference models.",
        epilog="Models are named as zoo:NAME, a .pt2 or .onnx file, file.py:Attr or package.module:Attr. "
               "Run `fxopt COMMAND -h` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"fxopt {__version__}")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="print tracebacks for errors and show torch's own warnings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=description or help_text)
        # SUPPRESS: `fxopt --debug run` and `fxopt run --debug` both work; the subcommand never resets it.
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="print tracebacks for errors and show torch's own warnings")
        return p

    run = add("run", "capture, optimize, compile, check and save a model",
              "Capture MODEL, run a pass pipeline over it, compile it with a backend, check the compiled "
              "artifact against the captured model on its example inputs, and save the artifact.")
    run.add_argument("model", metavar="MODEL",
                     help="zoo:NAME, a .pt2 or .onnx file, file.py:Attr or module:Attr (file.py:Attr and module:Attr "
                          "import, i.e. run, that Python file; .pt2 and .onnx files are read as data)")
    run.add_argument("--trust-pickle", action="store_true",
                     help="read a .pt2 whose parts only a full unpickler reads (unpickling can run code: only "
                          "for a file you trust as you would trust code)")
    add_model_input_arguments(run)
    run.add_argument("--passes", metavar="SPEC",
                     help="pass pipeline, e.g. 'canonicalize,dce' or 'unroll{partition=25},dce' "
                          "(default: the target's default pipeline; see `fxopt passes`)")
    run.add_argument("--backend", metavar="NAME", default="reference",
                     help=f"backend that compiles the result: {', '.join(backend_names)} (default: reference)")
    run.add_argument("--target", metavar="NAME",
                     help="target the passes optimize for (default: the backend name)")
    run.add_argument("-o", "--output", metavar="OUT",
                     help="artifact directory to write (default: out/<model name>); an existing one is "
                          "replaced only if it is empty or an fxopt artifact")
    run.add_argument("--no-verify", action="store_true",
                     help="skip the per-pass checks (lint + numeric comparison after every changing pass); "
                          "the final check of the compiled artifact against the captured model still runs")
    run.add_argument("--bisect-limit", metavar="N", type=_NON_NEGATIVE_INT,
                     help="run only the first N passes of the pipeline (to find a pass that breaks a model)")
    run.add_argument("--decode", metavar="max_new_tokens=N[,eos_token_id=ID,...]", type=_DecodeType(),
                     help="capture a Hugging Face model's greedy generate as a decode loop (tokens equal "
                          "model.generate(do_sample=False)); inputs: --input for input_ids [and attention_mask], "
                          "positional; or, for a model whose forward runs its own greedy loop, name its "
                          "methods: step=METHOD[,init_state=METHOD,encode=METHOD,max_len=N,bos_id=ID,eos_id=ID] "
                          "(docs/decode-loop.md)")
    run.add_argument("--lengths", metavar="FILE",
                     help="a histogram of output lengths (a JSON list, or CSV) of real requests: unroll chooses "
                          "its partition boundaries for it (boundaries=auto) and reports the expected steps "
                          "and partition calls per request")
    run.add_argument("--dynamic-batch", action="store_true",
                     help="capture dim 0 of the inputs as symbolic where the model allows (one artifact for "
                          "any batch; needed for bucketing, e.g. --backend 'neuron{buckets=1;4;16}')")
    run.add_argument("--batch", dest="deploy_batch", metavar="N", type=_POSITIVE_INT,
                     help="capture, place and compile at the batch size you deploy: the example inputs' batch "
                          "dim (dim 0 of the tensors that share the most common dim 0) repeated or cut to N rows "
                          "(split's estimates, the artifact's shapes; default: the example's)")
    run.add_argument("--price", metavar="DEVICE=USD_PER_H,...", type=_PriceType(),
                     help="place by US$ per request at these prices (split{objective=cost}), e.g. "
                          "'cpu=0.17,neuron=0.29'; an unnamed device keeps its profile's default price "
                          "(docs/passes/split.md)")
    run.add_argument("--require-accelerator", action="store_true",
                     help="exit 1 when the accelerator backend's artifact does no accelerator work, or less than "
                          "--min-accelerator-fraction of the FLOPs (the warning line says why and the fix; "
                          "the artifact is still written)")
    run.add_argument("--min-accelerator-fraction", metavar="F", type=_FRACTION,
                     help="share of the FLOPs (0..1) below which an accelerator artifact warns that it does "
                          "little accelerator work (default: 0.05; 0: warn only when it does none)")
    run.add_argument("--cache", metavar="DIR",
                     help="the compile cache: a run of the same model, passes, backend and versions reuses the "
                          "artifact stored there (default: $FXOPT_CACHE_DIR or ~/.cache/fxopt/compile)")
    run.add_argument("--no-cache", action="store_true",
                     help="neither reuse nor store artifacts in the compile cache (also: FXOPT_NO_CACHE=1)")
    run.add_argument("--viz", action="store_true",
                     help="also write page.html (the pass trace, see `fxopt viz`) into the artifact directory")
    run.set_defaults(handler=cmd_run)

    passes = add("passes", "list the registered passes and their options")
    passes.set_defaults(handler=cmd_passes)

    insp = add("inspect", "show a model's ops, parameters, cost and I/O, or an artifact's manifest",
               "Capture MODEL and show its op histogram, node count, parameters, FLOPs and bytes moved, "
               "dynamic dims and inputs/outputs. Given an artifact directory (with manifest.json), show "
               "its manifest instead. --placement: every node's placement, partition and split's reason.")
    insp.add_argument("model", metavar="MODEL", help="a model spec (as for `fxopt run`; file.py:Attr and "
                      "module:Attr import, i.e. run, that file) or an artifact directory")
    insp.add_argument("--trust-pickle", action="store_true",
                      help="read a .pt2 whose parts need a full unpickler (which can run code)")
    add_model_input_arguments(insp)
    insp.add_argument("--top", metavar="N", type=_NON_NEGATIVE_INT, default=15,
                      help="how many ops of the histogram to show (default: 15)")
    insp.add_argument("--placement", action="store_true",
                      help="show every node's placement, partition and split's reason for it: an artifact's "
                           "from its trace.json; a model's after running --passes for --target")
    insp.add_argument("--target", metavar="NAME", default="xla",
                      help="with --placement on a model: the target to place for (default: xla)")
    insp.add_argument("--passes", metavar="SPEC",
                      help="with --placement on a model: the pipeline to run (default: the target's default "
                           "pipeline, which ends with split)")
    insp.set_defaults(handler=cmd_inspect)

    zoo = add("zoo", "list the built-in models (use them as zoo:NAME)")
    zoo.set_defaults(handler=cmd_zoo)

    import importlib

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(add)
    return parser


# ------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fxopt`` command line on ``argv`` (default ``sys.argv[1:]``); returns the exit code (see
    the module docstring). It does not raise: argparse's own exits (usage errors, ``--help``, ``--version``)
    become return codes too."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (2), --help / --version (0)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    debug = bool(getattr(args, "debug", False))
    args.debug = debug
    try:
        with _quiet(not debug):
            code = int(args.handler(args) or EXIT_OK)
            sys.stdout.flush()  # a closed pipe shows up here, inside the handling below
            return code
    except KeyboardInterrupt:
        _error_line("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `fxopt passes | head`: the reader left; stop quietly
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except BaseException as exc:  # noqa: BLE001 - the CLI's one place that turns exceptions into codes
        return report_exception(exc, debug)


def report_exception(exc: BaseException, debug: bool) -> int:
    """Print ``exc`` as the CLI does (one line, or the traceback and the line with ``debug``); returns the
    exit code: ``exc.exit_code`` for an FxoptError, 3 for anything else."""
    from fxopt.errors import FxoptError, first_line

    if isinstance(exc, SystemExit):  # a handler called sys.exit: keep its code
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if isinstance(exc, FxoptError):
        _error_line(_one_line(str(exc)) or type(exc).__name__)
        return int(getattr(exc, "exit_code", 2))
    text = first_line(str(exc))
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if debug:
        print(f"fxopt: internal error: {message}", file=sys.stderr)
    else:
        print(f"fxopt: internal error: {message} (rerun with --debug for the traceback)", file=sys.stderr)
    sys.stderr.flush()
    return EXIT_INTERNAL


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail on a closed pipe again."""
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _error_line(message: str) -> None:
    print(f"fxopt: error: {message}", file=sys.stderr)
    sys.stderr.flush()


def _one_line(text: str) -> str:
    """FxoptError messages are one line by contract; collapse any stray newlines so the CLI's stays so."""
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


@contextlib.contextmanager
def _quiet(enabled: bool):
    """When ``enabled``: silence Python warnings and every log record up to ERROR (torch logs export
    failures at ERROR before raising them; the CLI prints its own one-line error instead). Everything is
    restored afterwards, since the CLI also runs in-process (e.g. in tests)."""
    if not enabled:
        yield
        return
    previous = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.ERROR)
        try:
            yield
        finally:
            logging.disable(previous)


@contextlib.contextmanager
def _swallow_stderr(enabled: bool):
    """When ``enabled``, discard what is written to ``sys.stderr`` inside the block (torch.export prints a
    partial graph there before raising on a model it cannot trace). The progress display is unaffected:
    its console holds the real stream."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def capture_model(spec: str, debug: bool = False, dynamic_batch: bool = False, trust_pickle: bool = False,
                  inputs: Any = None, decode: dict | None = None):
    """``fxopt.capture(spec, inputs)`` with torch's stderr chatter discarded unless ``debug``; with
    ``dynamic_batch``, dim 0 of the inputs is captured symbolic where the model allows; ``trust_pickle``
    lets a ``.pt2`` that needs a full unpickler be read; ``inputs`` (see :func:`model_request`) replaces the
    model's own example inputs; ``decode`` (a GenerationSpec's fields, or a LoopSpec's with a ``step``)
    captures the model's greedy generate, or the greedy loop its forward runs.
    Returns the captured Program (raises InputError when the model cannot be captured)."""
    from fxopt.api import capture

    with _swallow_stderr(not debug):
        return capture(spec, inputs, dynamic_shapes="batch" if dynamic_batch else None, trust_pickle=trust_pickle,
                       decode=decode)


def _stdout_console():
    """A rich Console on the current ``sys.stdout``; wide when it is not a terminal, so logged tables do
    not wrap at 80 columns."""
    from rich.console import Console

    tty = False
    with contextlib.suppress(AttributeError, ValueError):
        tty = sys.stdout.isatty()
    width = None if tty else max(120, _env_columns())

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich would raise SystemExit(1); main() handles it instead
            self.quiet = True
            raise BrokenPipeError

    return _Console(file=sys.stdout, width=width, highlight=False, soft_wrap=False)


def _env_columns() -> int:
    try:
        return int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        return 0


# ------------------------------------------------------------------------------------------ fxopt run
def default_output_dir(program_name: str) -> str:
    """``out/<name>`` for a program name, made safe as a directory name (``zoo:ranking`` → ``out/ranking``,
    ``model.pt2`` → ``out/model``)."""
    name = re.sub(r"\{[^{}]*\}$", "", program_name).rsplit(":", 1)[-1]   # zoo:ranking{small=true} -> ranking
    name = os.path.basename(name.rstrip("/\\"))
    if name.endswith(".pt2"):
        name = name[:-4]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    return os.path.join("out", name)


def check_output_dir(directory: str) -> None:
    """Fail early (InputError) when ``directory`` cannot take an artifact (see
    :func:`fxopt.backends.base.check_replaceable`). Creates nothing."""
    from fxopt.backends.base import check_replaceable

    check_replaceable(directory)


def cmd_run(args: argparse.Namespace) -> int:
    """``fxopt run``: capture → optimize → compile → check against the captured program → save; prints a
    per-pass table and the artifact line on stdout. Returns 0 (errors are raised as FxoptErrors)."""
    from rich.text import Text

    from fxopt.api import check_compiled
    from fxopt.backends.base import compile_program, get_backend, read_manifest, steps_summary
    from fxopt.passes.manager import optimize
    from fxopt.passes.registry import build_pipeline, default_pipeline
    from fxopt.tools import report
    from fxopt.tools.progress import Progress

    # Validate everything cheap before the (slow) capture.
    model_spec, inputs = model_request(args)
    backend = args.backend
    get_backend(backend)
    target = args.target or backend.partition("{")[0].strip()  # 'neuron{buckets=1;8}' optimizes for neuron
    if getattr(args, "require_accelerator", False) and not _is_accelerator_backend(backend):
        from fxopt.errors import InputError
        from fxopt.ir.targets import TARGETS
        raise InputError(f"--require-accelerator needs an accelerator backend ({', '.join(TARGETS)}), "
                         f"not '{backend}'")
    spec = args.passes if args.passes is not None else default_pipeline(target)
    pipeline = with_prices(build_pipeline(spec), getattr(args, "price", None), target)
    pipeline = with_lengths(pipeline, getattr(args, "lengths", None), target)
    if args.output:
        check_output_dir(args.output)
    cache = _run_cache(args, model_spec, pipeline, backend, target)
    if cache is not None and cache.hit_before_capture():
        code = cache.reuse_before_capture(args)
        if code is not None:
            return code

    timings: dict[str, float] = {}
    start_all = time.perf_counter()
    with Progress() as progress:
        with progress.stage(f"capturing {args.model}") as st:
            program = capture_model(model_spec, args.debug, args.dynamic_batch, args.trust_pickle, inputs,
                                    getattr(args, "decode", None))
            expected = program.run_flat(program.flat_example_inputs())
            st["done"] = f"captured {program.name}: {program.num_nodes_with_submodules()} nodes"
        for note in program.notes:
            progress.done(f"warning: {note}")
        timings["capture"] = st["seconds"]
        out_dir = args.output or default_output_dir(program.name)
        check_output_dir(out_dir)
        if cache is not None and cache.hit_after_capture(program):
            progress.done("found in the compile cache: the same graph, passes, backend and versions")
            code = cache.reuse_after_capture(args, program, out_dir)
            if code is not None:
                return code

        count = len(pipeline)

        def on_event(kind: str, rep: Any) -> None:
            if kind == "start":
                progress.update(f"pass {rep.index + 1}/{count}: {rep.spec}")
            elif kind == "end":
                if rep.status == "skipped":
                    progress.done(f"pass {rep.index + 1}/{count}: {rep.spec} skipped (--bisect-limit)")
                else:
                    what = (f"{rep.nodes_before} → {rep.nodes_after} nodes" if rep.modified
                            else "no change")
                    progress.done(f"pass {rep.index + 1}/{count}: {rep.spec}: {what} "
                                  f"({report.human_seconds(rep.seconds)})")
                progress.update(f"optimizing for {target}")

        t0 = time.perf_counter()
        progress.update(f"optimizing for {target} ({count} passes)")
        optimized = optimize(program, pipeline, target=target, verify=not args.no_verify,
                             bisect_limit=args.bisect_limit, on_event=on_event,
                             inplace=True)  # the captured program is ours, and its outputs are kept above
        timings["optimize"] = time.perf_counter() - t0

        with progress.stage(f"compiling with {backend}", f"compiled with {backend}") as st:
            compiled = compile_program(optimized, backend)
            idle = accelerator_shortfall(compiled, optimized, getattr(args, "min_accelerator_fraction", None))
        timings["compile"] = st["seconds"]
        with progress.stage("checking the artifact against the captured model") as st:
            if args.no_verify:
                hint = "rerun without --no-verify to find the pass, or bisect with --bisect-limit N"
            else:
                hint = (f"every pass passed its own check, so suspect the {backend} backend, or errors "
                        "that add up over the pipeline; bisect with --bisect-limit N")
            error = check_compiled(compiled, program, expected, hint)
            st["done"] = f"artifact matches the captured model (max abs error {error:.3g})"
        timings["check"] = st["seconds"]
        with progress.stage(f"saving to {out_dir}", f"saved {out_dir}") as st:
            path = compiled.save(out_dir)
            if getattr(args, "viz", False):  # after save: the artifact directory is written atomically
                from fxopt.tools.viz import write_page
                write_page(path)
            if cache is not None and not args.no_verify:   # only checked runs are reused
                cache.store(program, path)
        timings["save"] = st["seconds"]
    manifest = read_manifest(path)
    total = time.perf_counter() - start_all

    console = _stdout_console()
    reports = optimized.reports
    title = f"fxopt run {program.name}: {len(reports)} passes for target '{target}'"
    if reports:
        console.print(report.pass_table(reports, title=title))
    else:
        console.print(Text(f"{title} (empty pipeline)"))
    for line in (report.decode_line(reports), report.buckets_line(manifest)):
        if line:
            console.print(Text(line), soft_wrap=True)
    if args.bisect_limit is not None:
        ran = min(args.bisect_limit, len(reports))
        console.print(Text(f"bisect: ran the first {ran} of {len(reports)} passes (--bisect-limit "
                           f"{args.bisect_limit})"))
    if args.no_verify:
        console.print(Text("per-pass verification: off (--no-verify)"))
    console.print(Text(f"check: the {backend} artifact reproduces the captured model on the example inputs "
                       f"(max abs error {error:.3g})"))
    for stage in getattr(compiled, "stages", []):
        for line in stage.compile_notes():
            console.print(Text(line), soft_wrap=True)
    for note in getattr(compiled, "extra", {}).get("notes", []):
        console.print(Text(f"warning: {note}"), soft_wrap=True)
    console.print(Text("time: " + ", ".join(f"{k} {report.human_seconds(v)}" for k, v in timings.items())
                       + f"; total {report.human_seconds(total)}"))
    done, left = steps_summary(manifest)
    console.print(Text(
        f"artifact: {_display_path(path)} (backend {manifest.get('backend', backend)}); "
        f"compiled here: {', '.join(done) or 'nothing'}; "
        f"left for the target host: {', '.join(left) or 'nothing'}"), soft_wrap=True)
    if idle and getattr(args, "require_accelerator", False):
        _error_line(f"--require-accelerator: {idle.split(':', 1)[0]} (see the warning above); the artifact was "
                    f"still written to {_display_path(path)}")
        return EXIT_NO_ACCELERATOR
    return EXIT_OK


class _RunCache:
    """``fxopt run``'s use of the compile cache (:mod:`fxopt.tools.compile_cache`): the job key before
    capture, the graph key after it, and what the command prints when it reuses an artifact."""

    def __init__(self, root: str, model_spec: str, options: dict, passes: str, backend: str):
        from fxopt.tools.compile_cache import Cache, job_key, versions

        self.cache = Cache(root)
        self.options, self.passes, self.backend = options, passes, backend
        self.versions = versions(backend)
        self.job_key = job_key(model_spec, options, passes, backend, self.versions)
        self.graph_key: str | None = None
        self.record = self.cache.job(self.job_key)

    def hit_before_capture(self) -> bool:
        """Whether an artifact of this very job is stored (a model whose source fxopt can name)."""
        return self.record is not None

    def hit_after_capture(self, program: Any) -> bool:
        """Whether an artifact of this captured graph is stored."""
        from fxopt.tools.compile_cache import graph_key

        self.graph_key = graph_key(program, self.passes, self.backend, self.versions, self.options)
        return self.cache.has(self.graph_key)

    def store(self, program: Any, path: str) -> None:
        """Keep the artifact just written at ``path`` for later runs; a cache that cannot be written is one
        warning line, never a failed run."""
        if self.graph_key is None:
            return
        try:
            self.cache.store(self.graph_key, path, self.job_key, program.name)
        except OSError as exc:
            _stdout_console().print(f"warning: could not store the artifact in the compile cache "
                                    f"{_display_path(self.cache.root)} ({exc.strerror or exc}); --cache DIR "
                                    f"names another, --no-cache turns it off", soft_wrap=True, markup=False)

    def reuse_before_capture(self, args: argparse.Namespace) -> int | None:
        """Copy the stored artifact of the job key into the output directory and report it."""
        out_dir = args.output or default_output_dir(self.record.get("name") or "model")
        check_output_dir(out_dir)
        return self._reuse(args, self.record["graph"], out_dir, "an earlier run of the same model source")

    def reuse_after_capture(self, args: argparse.Namespace, program: Any, out_dir: str) -> int | None:
        """Copy the stored artifact of the captured graph into ``out_dir`` and report it."""
        with contextlib.suppress(OSError):   # remembering the job is an optimisation only
            self.cache.record(self.job_key, self.graph_key, program.name)
        return self._reuse(args, self.graph_key, out_dir, "an earlier run of the same graph and weights")

    def _reuse(self, args: argparse.Namespace, key: str, out_dir: str, what: str) -> int | None:
        """Copy and report; None (compile as usual) when the stored entry cannot be read."""
        from rich.text import Text

        from fxopt.backends.base import read_manifest, steps_summary
        from fxopt.errors import InputError

        try:
            self.cache.fetch(key, out_dir)
            path = os.path.abspath(out_dir)
            manifest = read_manifest(path)
        except (OSError, InputError) as exc:
            _stdout_console().print(f"warning: the compile cache entry {key[:12]} could not be used "
                                    f"({str(exc).splitlines()[0]}); compiling instead", soft_wrap=True,
                                    markup=False)
            return None
        console = _stdout_console()
        console.print(Text(f"reused from the compile cache {_display_path(self.cache.root)}: the artifact of "
                           f"{what}, passes, backend {self.backend} and versions (key {key[:12]}); nothing was "
                           f"optimized or compiled; --no-cache compiles it again"), soft_wrap=True)
        idle = manifest.get("accelerator_warning")
        for note in manifest.get("notes", []):
            console.print(Text(f"warning: {note}"), soft_wrap=True)
        done, left = steps_summary(manifest)
        console.print(Text(
            f"artifact: {_display_path(path)} (backend {manifest.get('backend', self.backend)}); "
            f"compiled here: {', '.join(done) or 'nothing'}; "
            f"left for the target host: {', '.join(left) or 'nothing'}"), soft_wrap=True)
        if idle and getattr(args, "require_accelerator", False):
            _error_line(f"--require-accelerator: {idle.split(':', 1)[0]} (see the warning above); the artifact "
                        f"was still written to {_display_path(path)}")
            return EXIT_NO_ACCELERATOR
        return EXIT_OK


def _run_cache(args: argparse.Namespace, model_spec: str, pipeline: list, backend: str,
               target: str) -> "_RunCache | None":
    """The compile cache of this ``fxopt run``, or None when it is off: ``--no-cache``, ``FXOPT_NO_CACHE``
    without an explicit ``--cache DIR``, or a ``--bisect-limit`` run (a deliberately partial pipeline)."""
    if getattr(args, "no_cache", False) or args.bisect_limit is not None:
        return None
    if os.environ.get("FXOPT_NO_CACHE") and not getattr(args, "cache", None):
        return None
    from fxopt.ir.files import file_sha256
    from fxopt.tools.compile_cache import default_cache_dir

    inputs_file = getattr(args, "inputs", None)
    options = {"spec": model_spec, "target": target, "input": [s.text() for s in (getattr(args, "input", None) or [])],
               "inputs_file": file_sha256(inputs_file) if inputs_file else None,
               "batch": getattr(args, "deploy_batch", None), "dynamic_batch": args.dynamic_batch,
               "decode": getattr(args, "decode", None),
               "lengths_file": file_sha256(args.lengths) if getattr(args, "lengths", None) else None,
               "trust_pickle": args.trust_pickle, "viz": getattr(args, "viz", False),
               "min_accelerator_fraction": getattr(args, "min_accelerator_fraction", None)}
    passes = ",".join(p.spec() for p in pipeline)
    return _RunCache(getattr(args, "cache", None) or default_cache_dir(), model_spec, options, passes, backend)


def _is_accelerator_backend(backend: str) -> bool:
    """True for a backend spec (``name{options}``) of an accelerator target: neuron, tensorrt, xla."""
    from fxopt.ir.targets import TARGETS

    return backend.partition("{")[0].strip() in TARGETS


def accelerator_shortfall(compiled: Any, program: Any, min_fraction: float | None = None) -> str | None:
    """The one-line "no/little <target> work" warning of an accelerator artifact (None when it does enough,
    or is not a partitioned accelerator artifact). With ``min_fraction`` (``--min-accelerator-fraction``) the
    warning is judged again at that share of the FLOPs and ``compiled``'s notes and manifest fields
    (``accelerator_warning``) are updated to match, so the saved manifest says the same as the CLI.
    ``program``: the optimized program ``compiled`` was compiled from."""
    extra = getattr(compiled, "extra", None)
    if not isinstance(extra, dict) or "accelerator_ops" not in extra or not hasattr(compiled, "stages"):
        return None
    idle = extra.get("accelerator_warning")
    if min_fraction is None:
        return idle
    from fxopt.backends.partitioned import no_accelerator_work

    fresh = no_accelerator_work(program, extra.get("target"), compiled.stages, min_fraction=min_fraction)
    notes = [n for n in extra.get("notes", []) if n != idle]
    if fresh:
        notes.append(fresh)
    if notes or "notes" in extra:
        extra["notes"] = notes
    extra["accelerator_warning"] = fresh
    return fresh


def _display_path(path: str) -> str:
    """``path`` relative to the working directory when it is inside it, else absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


# ------------------------------------------------------------------------------------------ fxopt passes
def cmd_passes(args: argparse.Namespace) -> int:
    """``fxopt passes``: a table of the passes (summary, options with type and default) and the default
    pipelines, from :mod:`fxopt.tools.catalog` (no torch import in a fresh process). Returns 0."""
    from rich.text import Text

    from fxopt.tools import catalog, report

    listing = catalog.current()
    console = _stdout_console()
    console.print(report.passes_table(listing["passes"]))
    for target, text in sorted(listing["default_pipelines"].items()):
        console.print(Text(f"default pipeline for target '{target}': {text}"))
    console.print(Text("usage: fxopt run --passes 'name{option=value,...},name,...' MODEL"))
    return EXIT_OK


# ------------------------------------------------------------------------------------------ fxopt inspect
def cmd_inspect(args: argparse.Namespace) -> int:
    """``fxopt inspect``: describe a model (captured) or an artifact directory (its manifest). Returns 0."""
    placement = getattr(args, "placement", False)
    if os.path.isdir(args.model):
        return _inspect_artifact(args.model, placement)
    spec, inputs = model_request(args)
    if placement:
        return _inspect_placement(spec, args, inputs)
    return _inspect_model(spec, args.top, args.debug, getattr(args, "trust_pickle", False), inputs)


def _inspect_placement(spec: str, args: argparse.Namespace, inputs: Any) -> int:
    """``fxopt inspect MODEL --placement``: capture, run ``--passes`` (default: ``--target``'s default
    pipeline), print the placement table and the accelerator work summary."""
    from rich.text import Text

    from fxopt.backends.partitioned import no_accelerator_work
    from fxopt.ir.partitions import accelerator_work
    from fxopt.ir.targets import TARGETS, is_bookkeeping
    from fxopt.passes.manager import optimize
    from fxopt.passes.registry import build_pipeline, default_pipeline
    from fxopt.tools import report
    from fxopt.tools.progress import Progress

    target = args.target
    pipeline = build_pipeline(args.passes if args.passes is not None else default_pipeline(target))
    with Progress() as progress:
        with progress.stage(f"capturing {spec}") as st:
            program = capture_model(spec, args.debug, trust_pickle=getattr(args, "trust_pickle", False),
                                    inputs=inputs)
            st["done"] = f"captured {program.name}"
        with progress.stage(f"optimizing for {target}", f"optimized for {target}"):
            program = optimize(program, pipeline, target=target, inplace=True)
    console = _stdout_console()
    console.print(report.placement_table(_node_rows(program), title=f"placement of {program.name} ({target})"))
    work = accelerator_work(program, is_bookkeeping=is_bookkeeping)
    acc = work["target"]
    console.print(Text(f"accelerator work: {work['accelerator_ops']} of {work['total_ops']} ops, "
                       f"{work['accelerator_flops_fraction']:.1%} of the FLOPs on {acc or 'no accelerator'}"))
    if acc in TARGETS:
        idle = no_accelerator_work(program, acc, None, work=work)
        if idle:
            console.print(Text(f"warning: {idle}"), soft_wrap=True)
    return EXIT_OK


def _node_rows(program: Any) -> list[dict]:
    from fxopt.ir.program import target_name

    return [{"name": n.name, "op": n.op, "target": target_name(n.target) if n.op == "call_function" else None,
             "placement": n.meta.get("placement"), "partition": n.meta.get("partition"),
             "placement_reason": n.meta.get("placement_reason", "")} for n in program.graph.nodes]


def _trace_nodes(trace: dict | None) -> list[dict] | None:
    """The node records of a pass trace's last snapshot (following ``same_as``); None without a trace."""
    snapshots = (trace or {}).get("snapshots")
    if not isinstance(snapshots, list) or not snapshots:
        return None
    by_index = {s.get("index"): s for s in snapshots if isinstance(s, dict)}
    snap = snapshots[-1] if isinstance(snapshots[-1], dict) else {}
    if "same_as" in snap:
        snap = by_index.get(snap["same_as"], {})
    nodes = snap.get("nodes")
    return [n for n in nodes if isinstance(n, dict)] if isinstance(nodes, list) else None


def _cost_rows(program: Any) -> list[tuple[str, str]]:
    """Rows for total FLOPs and bytes moved (``fxopt.ir.cost.graph_cost``): the symbolic expression when
    shapes are dynamic, and the value at the example sizes."""
    from fxopt.ir.cost import graph_cost
    from fxopt.tools.report import human_bytes, human_flops

    total = graph_cost(program.graph_module)
    concrete = total.evaluate()
    rows = []
    for label, expr, value, fmt in (
        ("FLOPs", total.flops, int(concrete.flops), human_flops),
        ("bytes moved", total.total_bytes, int(concrete.total_bytes), human_bytes),
    ):
        text = f"{fmt(value)} ({value:,})"
        if _is_symbolic(expr):
            text = f"{expr}  = {text} at the example sizes"
        rows.append((label, text))
    rows.append(("bytes read / written",
                 f"{human_bytes(int(concrete.bytes_read))} / {human_bytes(int(concrete.bytes_written))}"
                 + ("" if total.exact else "  (estimated: some ops have no cost formula)")))
    return rows


def _is_symbolic(expr: Any) -> bool:
    return bool(getattr(expr, "free_symbols", None))


def _inspect_model(spec: str, top: int, debug: bool, trust_pickle: bool = False, inputs: Any = None) -> int:
    from fxopt.backends.base import io_specs
    from fxopt.tools import report
    from fxopt.tools.progress import Progress

    with Progress() as progress:
        with progress.stage(f"capturing {spec}") as st:
            program = capture_model(spec, debug, trust_pickle=trust_pickle, inputs=inputs)
            st["done"] = f"captured {program.name}"
    params = program.parameters()
    unique_numel = _unique_numel(params)
    rows = [
        ("model", program.name),
        ("source", program.source),
        ("nodes", f"{program.num_nodes()} ({sum(program.op_histogram().values())} op calls, "
                  f"{len(program.placeholders())} inputs)"),
        ("parameters", f"{len(params)} tensors, {report.human_count(unique_numel)} elements "
                       f"({unique_numel:,})"),
        ("parameter bytes", f"{report.human_bytes(program.parameter_bytes(unique=True))} unique, "
                            f"{report.human_bytes(program.parameter_bytes(unique=False))} total "
                            f"({program.parameter_bytes(unique=True):,} / "
                            f"{program.parameter_bytes(unique=False):,} bytes)"),
        *_cost_rows(program),
        ("dynamic dims", report.dynamic_dims_text(program.dynamic_dims)),
    ]
    console = _stdout_console()
    console.print(report.key_value_table(rows, title=f"fxopt inspect {spec}"))
    console.print()
    console.print(report.histogram_table(program.op_histogram(), top))
    console.print()
    inputs, outputs = io_specs(program)
    console.print(report.io_table(inputs, outputs))
    return EXIT_OK


def _unique_numel(params: dict) -> int:
    seen: set = set()
    total = 0
    for t in params.values():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel()
    return total


def _inspect_artifact(directory: str, placement: bool = False) -> int:
    from rich.text import Text

    from fxopt.backends.base import read_manifest, read_trace
    from fxopt.tools import report

    manifest = read_manifest(directory)
    trace = os.path.join(directory, "trace.json")
    rows = [
        ("artifact", _display_path(os.path.abspath(directory))),
        ("program", manifest.get("program", "?")),
        ("source", manifest.get("source", "") or "-"),
        ("backend", manifest.get("backend")),
        ("format", f"{manifest.get('format')} v{manifest.get('version')} "
                   f"(written by fxopt {manifest.get('fxopt_version', '?')})"),
        ("passes", ", ".join(manifest.get("passes") or []) or "none"),
        ("dynamic dims", report.dynamic_dims_text(manifest.get("dynamic_dims") or {})),
        ("trace", "trace.json" if os.path.isfile(trace) else "none"),
    ]
    work = report.accelerator_work_text(manifest)
    if work:
        rows.append(("accelerator work", work))
    if manifest.get("accelerator_warning"):
        rows.append(("warning", manifest["accelerator_warning"]))
    console = _stdout_console()
    console.print(report.key_value_table(rows, title=f"fxopt inspect {directory}"))
    console.print()
    console.print(report.io_table(manifest.get("inputs") or [], manifest.get("outputs") or []))
    console.print()
    console.print(report.partitions_table(directory, manifest))
    if placement:
        console.print()
        nodes = _trace_nodes(read_trace(directory))
        if nodes is None:
            console.print(Text("placement: the artifact has no readable trace.json, which holds each node's "
                               "placement; re-create it with `fxopt run`"))
        else:
            console.print(report.placement_table(nodes))
    return EXIT_OK


# ------------------------------------------------------------------------------------------ fxopt zoo
def zoo_entries() -> list[tuple[str, str]]:
    """``[(name, summary of its module docstring), ...]`` for every built-in model (from the catalog)."""
    from fxopt.tools import catalog

    return [(m["name"], m["description"]) for m in catalog.current()["zoo"]]


def cmd_zoo(args: argparse.Namespace) -> int:
    """``fxopt zoo``: list the built-in models with their one-line description. Returns 0."""
    from rich.text import Text

    from fxopt.tools import report

    console = _stdout_console()
    console.print(report.zoo_table(zoo_entries()))
    console.print(Text("usage: fxopt run zoo:NAME  |  fxopt inspect zoo:NAME"))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
