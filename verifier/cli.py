"""Command line: the VNN-LIB 2.0 standard interface plus `bench` and `vnncomp`.

    verifier --name | --version
    verifier verify QUERY --network NAME=MODEL.onnx [--timeout S] [--serialise-assignments DIR]
    verifier supports CAPABILITY
    verifier vnncomp MODEL.onnx QUERY.vnnlib RESULT_FILE TIMEOUT      (used by run_instance.sh)
    verifier bench BENCH_DIR... [options]                            (see docs/bench.md)
    verifier audit MODEL.onnx --data DATA.npz --eps E1,E2 --out DIR   (see `verifier audit --help`)

Heavy libraries (torch, onnx, onnxruntime) are imported only by the commands that need them.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time

from . import NAME, __version__
from .budget import Deadline, Watchdog, process_age
from .capabilities import CAPABILITIES, ELEMENT_TYPES
from .verdict import Dialect, Verdict, spell

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1


class UsageError(Exception):
    pass


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"verifier: error: {message}", file=sys.stderr)
    return code


def _seconds(text: str) -> float:
    """A time limit: a positive, finite number of seconds (argparse turns the error into exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"the time limit must be a positive, finite number of seconds, "
                                         f"got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `verifier: error: ...` on stderr and exit status 2 (its own
    errors print the whole usage block first)."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"verifier: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="verifier", description="Formal verification of neural networks "
                                "(ONNX) against VNN-LIB properties.")
    p.add_argument("--name", action="store_true", help="print the solver's name")
    p.add_argument("--version", action="store_true", help="print the solver's version")
    sub = p.add_subparsers(dest="command")
    v = sub.add_parser("verify", help="decide a VNN-LIB query")
    v.add_argument("query")
    v.add_argument("--network", action="append", default=[], metavar="NAME=MODEL.onnx")
    v.add_argument("--timeout", type=_seconds, default=None, help="seconds (default: none)")
    v.add_argument("--serialise-assignments", metavar="DIR", default=None)
    _engine_options(v)
    s = sub.add_parser("supports", help="report a capability")
    s.add_argument("capability")
    c = sub.add_parser("vnncomp", help="run one VNN-COMP instance and write its result file")
    c.add_argument("onnx", help="the model, or the networks of a VNN-LIB 2.0 query as name=path pairs "
                                "(separated by ; or blanks) or (name path) pairs")
    c.add_argument("--base", default=None, help="the folder relative network paths are read from "
                                                "(default: the current one)")
    c.add_argument("vnnlib")
    c.add_argument("result_file")
    c.add_argument("timeout", type=_seconds)
    _engine_options(c)
    sub.add_parser("bench", help="run benchmark instances (see `verifier bench --help`)", add_help=False)
    sub.add_parser("audit", help="certify a classifier over a data set (see `verifier audit --help`)",
                   add_help=False)
    return p


def _engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-bab", action="store_true", help="stop after the incomplete stages")
    p.add_argument("--no-alpha", action="store_true", help="skip alpha-CROWN")
    p.add_argument("--no-crown", action="store_true", help="interval bounds only (with the attack)")
    p.add_argument("--lp-tighten", action="store_true",
                   help="after alpha-CROWN, tighten the intermediate bounds and bound the rows with LPs "
                        "(HiGHS; each bound rebuilt from the duals by our own code)")
    p.add_argument("--engine", choices=("bab", "milp", "sdp"), default="bab",
                   help="after the bounds: branch and bound (default); milp: HiGHS's MILP proposes "
                        "counterexamples and our LP branch and bound (certified node bounds) proves; sdp: "
                        "an SDP bound (small ReLU networks, certificate checked) before branch and bound")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-mb", type=float, default=0.0, metavar="MB",
                   help="memory the engine may hold for a query: the property's rows, the open branch-and-bound "
                        "domains and each pass's working tensors, chunked to fit (default: 40%% of RAM, "
                        "or half the free GPU memory)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def _config(args, timeout: float):
    from .config import BabConfig, LPConfig, VerifyConfig

    bab = BabConfig(enabled=not args.no_bab, memory_mb=args.memory_mb)
    return VerifyConfig(timeout_s=timeout, device=args.device, crown=not args.no_crown,
                        alpha=not (args.no_alpha or args.no_crown), bab=bab, lp=LPConfig(enabled=args.lp_tighten),
                        engine=args.engine,
                        seed=args.seed)


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING if quiet else logging.INFO,
                        format="verifier: %(message)s")


# --------------------------------------------------------------------------- verify
def _networks(args_networks: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in args_networks:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--network expects NAME=MODEL.onnx, got {item!r}")
        if name in out:
            raise UsageError(f"--network {name} given twice")
        out[name] = path
    return out


def _model_path(prop, networks: dict[str, str]):
    """The model file (VNN-LIB 1.0), or the --network mapping checked against the query's
    networks (2.0: every network but equal-to ones takes exactly one)."""
    if prop.version == "1.0":
        if len(networks) != 1:
            raise UsageError(f"a VNN-LIB 1.0 query needs exactly one --network, got {len(networks)}")
        return next(iter(networks.values()))
    from .joint import JointError, model_paths

    try:
        model_paths(prop, networks)
    except JointError as e:
        raise UsageError(str(e)) from None
    return networks


def _model_types(path: str):
    """(input element types, output element types) of the model: ONNX type codes."""
    from .onnx_import import ModelError, load_model

    try:
        model = load_model(path)
    except ModelError as e:
        raise UsageError(str(e)) from None
    inits = {i.name for i in model.graph.initializer}
    ins = {i.name: i.type.tensor_type.elem_type for i in model.graph.input if i.name not in inits}
    outs = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    return ins, outs


def _check_types(prop, models) -> None:
    """Declared element types must be supported and match the model's (except `real`).  Hidden
    tensors are checked by onnxruntime's typing when they are read."""
    if prop.version == "1.0":
        return
    for net in prop.networks:
        ins, outs = _model_types(models[net.equal_to or net.name])
        pairs = [(v, ins.get(v.onnx_name) if v.onnx_name else e) for v, e in zip(net.inputs, ins.values())]
        pairs += [(v, outs.get(v.onnx_name) if v.onnx_name else e) for v, e in zip(net.outputs, outs.values())]
        for var, elem in pairs + [(v, None) for v in net.hidden]:
            t = var.dtype.lower()
            if t not in ELEMENT_TYPES:
                raise UsageError(f"element type {var.dtype} of {var.name} is not supported")
            want = ELEMENT_TYPES[t]
            if want is not None and elem is not None and want != elem:
                import onnx

                raise UsageError(f"{var.name} is declared {var.dtype} but the model's tensor is "
                                 f"{onnx.helper.tensor_dtype_to_np_dtype(elem)}")


def _assignment_blocks(prop, result, model_path):
    """[(name, type, shape, flat values)] for every declared variable: inputs, hidden tensors,
    outputs, network by network (VNN-LIB 2.0), or X then Y (1.0)."""
    if prop.version == "1.0":
        from .onnx_import import load_model

        m = load_model(model_path)
        inits = {i.name for i in m.graph.initializer}
        inp = [i for i in m.graph.input if i.name not in inits][0]
        out = m.graph.output[0]
        shape = lambda vi: [d.dim_value if d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]
        tname = lambda vi: "float64" if vi.type.tensor_type.elem_type == 11 else "float32"
        return [("X", tname(inp), shape(inp), result.x), ("Y", tname(out), shape(out), result.y)]
    starts, blocks = {}, []
    for side, variables, values in ((0, prop.inputs, result.x), (1, prop.outputs, result.y)):
        at = 0
        for v in variables:
            starts[(side, v.name)] = values[at:at + v.size]
            at += v.size
    for net in prop.networks:
        for side, v in [(0, v) for v in net.inputs] + [(1, v) for v in net.hidden + net.outputs]:
            blocks.append((v.name, v.dtype, list(v.shape), starts[(side, v.name)]))
    return blocks


def _assignment_lines(blocks) -> list[str]:
    """Each variable's header line, then its values: integer types as integers."""
    from .argmax import is_integer

    lines = []
    for name, dtype, shape, values in blocks:
        lines.append(f"{name} {dtype} [{','.join(str(d) for d in shape)}]")
        lines.extend(str(int(v)) if is_integer(dtype) else repr(float(v)) for v in values)
    return lines


def _print_assignment(blocks) -> None:
    sys.stdout.write("\n".join(_assignment_lines(blocks)) + "\n")


def _vnncomp_models(column: str, base: str | None):
    """The model path, or {network: path} when the argument lists name=path pairs (VNN-COMP 2026's
    instances with several networks); relative paths are read from base."""
    from .bench.instances import InstancesError, network_pairs

    try:
        pairs = network_pairs(column)
    except InstancesError as e:
        raise UsageError(str(e)) from None
    root = base or os.getcwd()
    if pairs is None:
        return os.path.join(root, column)
    return {name: os.path.join(root, path) for name, path in pairs.items()}


def _serialise(blocks, directory: str) -> None:
    import numpy as np
    from onnx import numpy_helper

    from .argmax import is_integer

    os.makedirs(directory, exist_ok=True)
    for name, dtype, shape, values in blocks:
        np_type = np.float64 if dtype.lower() in ("float64", "real") else np.dtype(dtype.lower()).type \
            if is_integer(dtype) else np.float32
        arr = np.asarray(values, dtype=np_type).reshape(shape if shape else ())
        with open(os.path.join(directory, f"{name}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(arr, name).SerializeToString())


@contextlib.contextmanager
def _stdout_for_the_verdict():
    """While the engine runs, whatever it or a library writes to stdout (a solver's banner, say)
    goes to stderr instead, at the file-descriptor level: stdout carries the verdict alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def cmd_verify(args, started: float) -> int:
    _setup_logging(args.quiet)
    timeout = args.timeout if args.timeout is not None else 1e9
    deadline = Deadline(timeout, start=started)
    # the hard stop: everything after the limit counts, the imports and the model's loading too
    watchdog = (Watchdog(deadline, spell(Verdict.TIMEOUT, Dialect.STANDARD) + "\n")
                if args.timeout is not None and args.hard_stop else None)
    from .api import InputError, load_property, verify

    try:
        networks = _networks(args.network)
        prop = load_property(args.query)
        model_path = _model_path(prop, networks)
        _check_types(prop, {} if prop.version == "1.0" else model_path)
        with _stdout_for_the_verdict():
            result = verify(model_path, args.query, timeout=timeout, config=_config(args, timeout),
                            prop=prop, deadline=deadline)
    except (UsageError, InputError) as e:
        if watchdog is not None and not watchdog.claim():
            return 0
        return _fail(str(e))
    except MemoryError as e:   # the query (its text, say) does not fit the machine: a verdict, not a bug
        if watchdog is not None and not watchdog.claim():
            return 0
        return _out_of_memory(e, lambda: print(spell(Verdict.UNKNOWN, Dialect.STANDARD)))
    if watchdog is not None and not watchdog.claim():
        return 0    # the watchdog answered (timed-out) and is ending the process
    print(spell(result.verdict, Dialect.STANDARD))
    if result.verdict is Verdict.SAT:
        blocks = _assignment_blocks(prop, result, model_path)
        if args.serialise_assignments:
            _serialise(blocks, args.serialise_assignments)
        else:
            _print_assignment(blocks)
    sys.stdout.flush()
    logging.getLogger("verifier").info("%s in %.2f s%s", result.verdict.value, time.monotonic() - started,
                                       f" ({result.reason})" if result.reason else "")
    return 0


def _out_of_memory(e: MemoryError, answer) -> int:
    """Answer unknown for a query the machine could not hold, with the reason on stderr."""
    answer()
    print(f"verifier: out of memory: {e or 'the machine could not allocate what the query needs'}: unknown",
          file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- vnncomp
def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def cmd_vnncomp(args, started: float) -> int:
    _setup_logging(args.quiet)
    _write_atomic(args.result_file, "timeout\n")  # pre-seeded: a killed run still reads as timeout
    deadline = Deadline(args.timeout, start=started)
    # the file already says timeout: the watchdog only has to end the process on time
    watchdog = Watchdog(deadline, spell(Verdict.TIMEOUT, Dialect.VNNCOMP) + "\n") if args.hard_stop else None
    from .api import InputError, load_property, verify

    try:
        models = _vnncomp_models(args.onnx, args.base)
        prop = load_property(args.vnnlib)
        with _stdout_for_the_verdict():
            result = verify(models, args.vnnlib, timeout=args.timeout, config=_config(args, args.timeout),
                            prop=prop, deadline=deadline)
    except UsageError as e:
        if watchdog is not None and not watchdog.claim():
            return 0
        _write_atomic(args.result_file, "error\n")
        return _fail(str(e))
    except InputError as e:
        if watchdog is not None and not watchdog.claim():
            return 0
        _write_atomic(args.result_file, "error\n")
        return _fail(str(e))
    except MemoryError as e:
        if watchdog is not None and not watchdog.claim():
            return 0
        text = spell(Verdict.UNKNOWN, Dialect.VNNCOMP)
        return _out_of_memory(e, lambda: (_write_atomic(args.result_file, text + "\n"), print(text)))
    if watchdog is not None and not watchdog.claim():
        return 0
    text = spell(result.verdict, Dialect.VNNCOMP) + "\n"
    if result.verdict is Verdict.SAT and isinstance(models, dict):
        # several networks: no flat X_i / Y_i to write; the standard's assignment, variable by variable
        text += "".join(f"{line}\n" for line in _assignment_lines(_assignment_blocks(prop, result, models)))
    elif result.verdict is Verdict.SAT:
        xs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(result.x)]
        ys = [f"(Y_{i} {float(v)!r})" for i, v in enumerate(result.y)]
        text += "(" + "\n".join(xs + ys) + ")\n"
    _write_atomic(args.result_file, text)
    print(text.splitlines()[0])
    return 0


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # stdout closed early (`verifier supports ... | head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None) -> int:
    # run as the process's command (argv None): the limit counts from the process's start, and a
    # watchdog stops it there; called in-process (argv given), from the call, with no watchdog
    whole_process = argv is None
    started = time.monotonic() - (process_age() if whole_process else 0.0)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from .bench.command import main as bench_main

        return bench_main(argv[1:])
    if argv and argv[0] == "audit":
        from .audit.command import main as audit_main

        return audit_main(argv[1:])
    if argv and argv[0] == "supports":  # capabilities look like options: no argparse here
        if len(argv) != 2:
            return _fail("usage: verifier supports CAPABILITY")
        answer = CAPABILITIES.get(argv[1])
        if answer is None:
            return _fail(f"unknown capability {argv[1]!r} (known: {', '.join(CAPABILITIES)})")
        print("\n".join(answer))
        return 0
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse already printed its one-line usage error
        return EXIT_BAD_INPUT if e.code else 0
    if args.name:
        print(NAME)
        return 0
    if args.version:
        print(__version__)
        return 0
    try:
        args.hard_stop = whole_process
        if args.command == "verify":
            return cmd_verify(args, started)
        if args.command == "vnncomp":
            return cmd_vnncomp(args, started)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:  # a bug: one line, never a traceback; `unknown` keeps harnesses safe
        if args.command == "verify":
            print("unknown")
        return _fail(f"internal error: {type(e).__name__}: {e}", EXIT_INTERNAL)
    _parser().print_help(sys.stderr)
    return EXIT_BAD_INPUT
