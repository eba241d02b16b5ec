"""Independent check of a ``sat`` answer: the assignment, onnxruntime, and our own VNN-LIB evaluator.

This module shares no code with the engine on purpose: it reads VNN-LIB 1.0 and 2.0 with its own
small s-expression reader, runs the ORIGINAL model with onnxruntime, and evaluates the property on
(X from the answer, Y from onnxruntime) in float64.

Tolerances are VNN-COMP's: an input comparison (one that mentions only inputs) may be off by 1e-6
absolute, because counterexamples are printed in decimal and the box edges are float32 casts of
decimal literals; an output comparison must hold exactly, since the whole point of a
counterexample is that the model really violates the property there.

The input is first cast to the model's input type (float32 for nearly every benchmark, float64 for
ACC and drones) and the constraints are judged on the cast values: that is the point the model
actually saw.
"""
from __future__ import annotations

import gzip
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

INPUT_TOL = 1e-6
STATUSES = ("ok", "bad-input", "bad-output", "missing", "error")


class SpecError(ValueError):
    """A property this evaluator cannot read; the message says where."""


@dataclass(frozen=True)
class Check:
    """The verdict on one counterexample: ``status`` in STATUSES, ``detail`` says why."""

    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ----------------------------------------------------------------------------------------------
# Reading: one regex tokenizer, an iterative s-expression builder (no recursion, so an 11 MB
# nn4sys property is ~1e6 tokens and ~1 s, whatever its nesting).

_TOKEN = re.compile(
    r';[^\n]*'                               # comment
    r'|"[^"]*"'                              # string (ONNX tensor name of a hidden node)
    r'|[A-Za-z_][A-Za-z0-9_.]*\[[^\]]*\]'    # indexed tensor element X[0,1]
    r'|\[[^\]]*\]'                           # shape [1,3]
    r'|[()]'
    r'|[^\s()\[;"]+'                         # name, number, operator
)


def read_sexprs(text: str) -> list:
    """Top-level s-expressions of ``text``: lists of lists and atom strings."""
    stack: list[list] = [[]]
    for tok in _TOKEN.findall(text):
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise SpecError("unbalanced ')'")
            done = stack.pop()
            stack[-1].append(done)
        elif tok[0] != ";":
            stack[-1].append(tok)
    if len(stack) != 1:
        raise SpecError(f"{len(stack) - 1} unclosed '('")
    return stack[0]


def read_text(path: Path) -> str:
    data = Path(path).read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8")


# ----------------------------------------------------------------------------------------------
# The property: declared tensors and one compiled formula (the conjunction of the assertions).

INPUT, HIDDEN, OUTPUT = "input", "hidden", "output"
AND, OR, CMP, CONST, VAR = "and", "or", "cmp", "const", "var"
_CMP_OPS = {"<=", ">=", "<", ">", "==", "=", "!="}
_ARITH = {"+", "-", "*", "/"}
_IGNORED = {"set-logic", "set-info", "set-option", "check-sat", "get-model", "exit", "vnnlib-version"}
_SHAPE = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)?\s*\]$")
_V1_NAME = re.compile(r"([XY])_(\d+)$")
_INDEXED = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)\[([^\]]*)\]$")


@dataclass(frozen=True)
class Tensor:
    """A declared variable: role (input/hidden/output), shape, ONNX tensor name for hidden ones."""

    name: str
    role: str
    shape: tuple[int, ...]
    onnx_name: str = ""
    network: str = ""


@dataclass
class Spec:
    """A parsed property: ``tensors`` in declaration order, ``formula`` a compiled tree."""

    version: int
    tensors: dict[str, Tensor] = field(default_factory=dict)
    networks: list[str] = field(default_factory=list)
    formula: tuple = (AND, ())
    same_model: dict[str, str] = field(default_factory=dict)   # equal-to network -> its model's network

    def of_role(self, role: str) -> list[Tensor]:
        return [t for t in self.tensors.values() if t.role == role]


def parse_spec(text: str) -> Spec:
    """Parse VNN-LIB 1.0 (``declare-const X_i``) or 2.0 (``declare-network``) text."""
    exprs = read_sexprs(text)
    version = 2 if any(isinstance(e, list) and e[:1] == ["declare-network"] for e in exprs) else 1
    spec = Spec(version)
    v1_sizes = {"X": 0, "Y": 0}
    asserts = []
    for e in exprs:
        if not isinstance(e, list) or not e:
            raise SpecError(f"top-level atom {e!r}")
        head = e[0]
        if head == "assert":
            if len(e) != 2:
                raise SpecError("assert takes one formula")
            asserts.append(e[1])
        elif head == "declare-network":
            _declare_network(spec, e)
        elif head in ("declare-const", "declare-fun"):
            if version == 1:
                m = _V1_NAME.match(str(e[1]))
                if not m:
                    raise SpecError(f"VNN-LIB 1.0 variable {e[1]!r} is not X_i or Y_i")
                v1_sizes[m.group(1)] = max(v1_sizes[m.group(1)], int(m.group(2)) + 1)
            # VNN-LIB 2.0 files sometimes also declare-fun each element; the network says it all.
        elif head not in _IGNORED:
            raise SpecError(f"unsupported command {head!r}")
    if version == 1:
        spec.tensors["X"] = Tensor("X", INPUT, (v1_sizes["X"],))
        spec.tensors["Y"] = Tensor("Y", OUTPUT, (v1_sizes["Y"],))
    spec.formula = (AND, tuple(_formula(spec, a) for a in asserts))
    return spec


def _declare_network(spec: Spec, e: list) -> None:
    if len(e) < 2 or not isinstance(e[1], str):
        raise SpecError("declare-network needs a name")
    spec.networks.append(e[1])
    for d in e[2:]:
        if not isinstance(d, list) or not d:
            raise SpecError(f"bad declaration in network {e[1]}")
        role = {"declare-input": INPUT, "declare-hidden": HIDDEN, "declare-output": OUTPUT}.get(d[0])
        if role is None:
            if d[0] == "equal-to" and len(d) == 2 and isinstance(d[1], str):
                spec.same_model[e[1]] = d[1]
                continue
            if d[0] == "isomorphic-to":
                continue
            raise SpecError(f"unsupported declaration {d[0]!r}")
        if len(d) < 4:
            raise SpecError(f"{d[0]} needs a name, a type and a shape")
        name, shape_tok = d[1], d[3]
        m = _SHAPE.match(shape_tok) if isinstance(shape_tok, str) else None
        if not m:
            raise SpecError(f"bad shape {shape_tok!r} of {name}")
        shape = tuple(int(s) for s in m.group(1).split(",")) if m.group(1) else ()
        onnx_name = d[4].strip('"') if role == HIDDEN and len(d) > 4 and isinstance(d[4], str) else ""
        if name in spec.tensors:
            raise SpecError(f"{name} declared twice")
        spec.tensors[name] = Tensor(name, role, shape, onnx_name, e[1])


def _formula(spec: Spec, e) -> tuple:
    """Compile a boolean s-expression: (AND|OR, children) or (CMP, op, terms, input_only)."""
    if not isinstance(e, list) or not e:
        raise SpecError(f"expected a formula, got {e!r}")
    head = e[0]
    if head in ("and", "or"):
        return (AND if head == "and" else OR, tuple(_formula(spec, c) for c in e[1:]))
    if head in _CMP_OPS:
        if len(e) < 3:
            raise SpecError(f"{head} needs two operands")
        roles: set[str] = set()
        terms = tuple(_term(spec, t, roles) for t in e[1:])
        return (CMP, "==" if head == "=" else head, terms, roles == {INPUT})
    raise SpecError(f"unsupported connective {head!r}")


def _term(spec: Spec, e, roles: set[str]) -> tuple:
    if isinstance(e, list):
        if not e or e[0] not in _ARITH or len(e) < 2:
            raise SpecError(f"unsupported term {e!r:.80}")
        return (e[0], tuple(_term(spec, t, roles) for t in e[1:]))
    try:
        return (CONST, float(e))
    except ValueError:
        pass
    name, flat = _variable(spec, e)
    roles.add(spec.tensors[name].role)
    return (VAR, name, flat)


def _variable(spec: Spec, tok: str) -> tuple[str, int]:
    if spec.version == 1:
        m = _V1_NAME.match(tok)
        if not m:
            raise SpecError(f"unknown name {tok!r}")
        return m.group(1), int(m.group(2))
    m = _INDEXED.match(tok)
    name, index = (m.group(1), tuple(int(i) for i in m.group(2).split(","))) if m else (tok, ())
    t = spec.tensors.get(name)
    if t is None:
        raise SpecError(f"undeclared variable {name!r}")
    if len(index) == len(t.shape) and all(0 <= i < s for i, s in zip(index, t.shape)):
        return name, int(np.ravel_multi_index(index, t.shape)) if index else 0
    if len(index) == 1:
        # Some converted benchmarks declare shape [0] and index the flat tensor; the element
        # count is then checked against the model, when the values are known.
        return name, index[0]
    raise SpecError(f"index {tok!r} does not fit shape {list(t.shape)}")


# ----------------------------------------------------------------------------------------------
# Evaluation.  env: tensor name -> list of float (Python floats index ~5x faster than numpy).

def holds(formula: tuple, env: dict[str, list[float]], tol: float = INPUT_TOL, inputs_only: bool = False) -> bool:
    """Truth of ``formula`` at ``env``.  With ``inputs_only``, comparisons that mention any output
    or hidden value count as true (the formula is monotone: and/or of comparisons), so the answer
    says whether the input part alone can hold."""
    tag = formula[0]
    if tag == AND:
        return all(holds(c, env, tol, inputs_only) for c in formula[1])
    if tag == OR:
        return any(holds(c, env, tol, inputs_only) for c in formula[1])
    _, op, terms, input_only = formula
    if inputs_only and not input_only:
        return True
    slack = tol if input_only else 0.0
    vals = [_value(t, env) for t in terms]
    return all(_compare(op, a, b, slack) for a, b in zip(vals, vals[1:]))


def _compare(op: str, a: float, b: float, slack: float) -> bool:
    if op == "<=":
        return a <= b + slack
    if op == ">=":
        return a >= b - slack
    if op == "<":
        return a < b + slack
    if op == ">":
        return a > b - slack
    if op == "==":
        return abs(a - b) <= slack
    return a != b


def _value(t: tuple, env: dict[str, list[float]]) -> float:
    tag = t[0]
    if tag == VAR:
        return env[t[1]][t[2]]
    if tag == CONST:
        return t[1]
    vals = [_value(s, env) for s in t[1]]
    if tag == "+":
        return sum(vals)
    if tag == "-":
        return -vals[0] if len(vals) == 1 else vals[0] - sum(vals[1:])
    acc = vals[0]
    for v in vals[1:]:
        acc = acc * v if tag == "*" else acc / v
    return acc


def max_index(formula: tuple, found: dict[str, int] | None = None) -> dict[str, int]:
    """The largest flat index each tensor is referenced with (to check counts before evaluating)."""
    found = {} if found is None else found
    stack = [formula]
    while stack:
        node = stack.pop()
        tag = node[0]
        if tag in (AND, OR):
            stack.extend(node[1])
        elif tag == CMP:
            stack.extend(node[2])
        elif tag == VAR:
            found[node[1]] = max(found.get(node[1], -1), node[2])
        elif tag != CONST:
            stack.extend(node[1])
    return found


# ----------------------------------------------------------------------------------------------
# The answer's assignment.

_HEADER = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)\s+(\S+)\s+\[([0-9,\s]*)\]$")
_PAIR = re.compile(r"\(\s*([XY])_(\d+)\s+([^\s()]+)\s*\)")


def parse_assignment(text: str) -> dict[str, np.ndarray]:
    """Variable name -> flat float64 values, from the lines after ``sat``.

    Reads the VNN-LIB 2.0 command-line form (``NAME TYPE [dims]`` then one value per line) and,
    for other tools, the VNN-COMP result form ``((X_0 v) (X_1 v) ... (Y_0 v))``.
    Raises ValueError when the text is neither.
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return {}
    if lines[0].startswith("("):
        return _parse_pairs(" ".join(lines))
    out: dict[str, np.ndarray] = {}
    i = 0
    while i < len(lines):
        m = _HEADER.match(lines[i])
        if not m:
            raise ValueError(f"expected a header 'NAME TYPE [dims]', got {lines[i][:80]!r}")
        dims = [int(d) for d in m.group(3).replace(" ", "").split(",") if d]
        n = int(np.prod(dims, dtype=np.int64)) if dims else 1
        vals = lines[i + 1 : i + 1 + n]
        if len(vals) != n:
            raise ValueError(f"{m.group(1)}: {n} values announced, {len(vals)} given")
        out[m.group(1)] = np.array([float(v) for v in vals], dtype=np.float64)
        i += 1 + n
    return out


def _parse_pairs(text: str) -> dict[str, np.ndarray]:
    cells: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for name, idx, val in _PAIR.findall(text):
        cells[name][int(idx)] = float(val)
    if not cells["X"]:
        raise ValueError("no (X_i value) pairs")
    out = {}
    for name, d in cells.items():
        if d:
            if sorted(d) != list(range(len(d))):
                raise ValueError(f"{name}_i indices are not 0..{len(d) - 1}")
            out[name] = np.array([d[i] for i in range(len(d))], dtype=np.float64)
    return out


# ----------------------------------------------------------------------------------------------
# onnxruntime on the original model.

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
_session_lock = threading.Lock()


@lru_cache(maxsize=8)
def _session(onnx_path: str, extra_outputs: tuple[str, ...]):
    import onnxruntime as ort

    data = Path(onnx_path).read_bytes()
    if onnx_path.endswith(".gz"):
        data = gzip.decompress(data)
    if extra_outputs:
        import onnx

        model = onnx.load_from_string(data)
        present = {o.name for o in model.graph.output}
        for name in extra_outputs:
            if name not in present:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
        data = model.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def run_model(onnx_path: Path, inputs: list[np.ndarray], extra_outputs: tuple[str, ...] = ()):
    """Feed flat ``inputs`` (one per graph input, in order) to the model.

    Returns (the inputs as the model saw them, flat float64; graph outputs then ``extra_outputs``,
    flat float64).  Raises ValueError on an element count that does not fit an input.
    """
    with _session_lock:
        sess = _session(str(onnx_path), tuple(extra_outputs))
    feeds, seen = {}, []
    specs = sess.get_inputs()
    if len(specs) != len(inputs):
        raise ValueError(f"the model has {len(specs)} inputs, the answer gives {len(inputs)}")
    for spec, x in zip(specs, inputs):
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        if int(np.prod(shape, dtype=np.int64)) != x.size:
            raise ValueError(f"input {spec.name} needs {int(np.prod(shape))} values (shape {spec.shape}), got {x.size}")
        cast = x.astype(_ORT_TYPES.get(spec.type, np.float32)).reshape(shape)
        feeds[spec.name] = cast
        seen.append(cast.astype(np.float64).ravel())
    outs = sess.run(None, feeds)
    return seen, [np.asarray(o, dtype=np.float64).ravel() for o in outs]


# ----------------------------------------------------------------------------------------------

def check_counterexample(spec_path: Path, onnx_path: Path, assignment_text: str) -> Check:
    """Judge the assignment printed after ``sat`` for the property at ``spec_path``."""
    try:
        assignment = parse_assignment(assignment_text)
    except ValueError as e:
        return Check("missing", f"unreadable assignment: {e}")
    if not assignment:
        return Check("missing", "sat without an assignment")
    try:
        spec = parse_spec(read_text(spec_path))
    except (SpecError, UnicodeDecodeError, OSError) as e:
        return Check("error", f"cannot read the property: {e}")
    return check_parsed(spec, onnx_path, assignment)


def check_parsed(spec: Spec, onnx_path, assignment: dict[str, np.ndarray]) -> Check:
    """The counterexample check proper, for an already parsed property and assignment.
    onnx_path: the model, or {network: model file} for a property over several networks (an
    equal-to network runs its model's file)."""
    inputs = spec.of_role(INPUT)
    missing = [t.name for t in inputs if t.name not in assignment]
    if missing:
        return Check("missing", f"no value for input {', '.join(missing)}")
    paths = onnx_path if isinstance(onnx_path, dict) else None
    if paths is None and len(spec.networks) > 1:
        return Check("error", "a property over several networks needs a model per network")
    env: dict[str, list[float]] = {}
    seen_all = []
    for net in (spec.networks or [""]):
        path = onnx_path if paths is None else paths.get(net, paths.get(spec.same_model.get(net, ""), None))
        if path is None:
            return Check("error", f"no model for network {net}")
        status = _run_network(spec, net, path, assignment, env, seen_all)
        if status is not None:
            return status
    for name, top in max_index(spec.formula).items():
        if top >= len(env[name]):
            role = spec.tensors[name].role
            status = "bad-input" if role == INPUT else "error"
            return Check(status, f"the property reads {name} element {top}, which has {len(env[name])}")
    if not all(np.all(np.isfinite(v)) for v in seen_all):
        return Check("bad-input", "non-finite input")
    if not holds(spec.formula, env, inputs_only=True):
        return Check("bad-input", "the input is outside the property's input region")
    if not holds(spec.formula, env):
        return Check("bad-output", "onnxruntime's output does not violate the property")
    return Check("ok")


def _run_network(spec: Spec, net: str, path, assignment, env: dict, seen_all: list) -> Check | None:
    """Run one network's model on its inputs from the assignment; its inputs (as the model saw
    them), hidden tensors and outputs go into env.  A Check when that fails."""
    mine = lambda role: [t for t in spec.of_role(role) if not net or t.network == net]
    inputs, hidden, outputs = mine(INPUT), mine(HIDDEN), mine(OUTPUT)
    try:
        seen, outs = run_model(path, [assignment[t.name] for t in inputs], tuple(t.onnx_name for t in hidden))
    except ValueError as e:
        return Check("bad-input", str(e))
    except Exception as e:  # onnxruntime raises its own types; any failure means "not confirmed"
        return Check("error", f"onnxruntime: {type(e).__name__}: {e}")
    seen_all.extend(seen)
    n_graph = len(outs) - len(hidden)
    env.update({t.name: v.tolist() for t, v in zip(inputs, seen)})
    if spec.version == 1:
        env["Y"] = np.concatenate(outs[:n_graph]).tolist() if n_graph else []
    else:
        if len(outputs) != n_graph:
            return Check("error", f"the property declares {len(outputs)} outputs, the model has {n_graph}")
        env.update({t.name: v.tolist() for t, v in zip(outputs, outs[:n_graph])})
    env.update({t.name: v.tolist() for t, v in zip(hidden, outs[n_graph:])})
    return None
