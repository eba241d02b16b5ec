"""The Python API: verifier.verify(onnx_path, vnnlib_path, timeout=...) -> Result."""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Mapping

from .budget import Deadline
from .config import VerifyConfig
from .verdict import Result, Verdict


class InputError(Exception):
    """The query, the model or their combination cannot be read or is unsupported."""


def load_property(vnnlib_path: str | os.PathLike):
    import vnnlib

    try:
        return vnnlib.parse_file(vnnlib_path)
    except vnnlib.VnnlibError as e:
        raise InputError(str(e)) from None
    except OSError as e:
        raise InputError(f"{vnnlib_path}: {e.strerror or e}") from None


def load_checked(onnx_path: str | os.PathLike):
    """The model's graph as the engine bounds it (simplified, float64, CPU) and onnxruntime on the
    model as given.  A model onnxruntime cannot load is refused: nothing could confirm a
    counterexample or check the import, and it is not a well-typed ONNX model (onnxruntime
    type-checks what onnx's checker does not, e.g. a float64 input fed to float32 weights)."""
    from .confirm import ReferenceModel
    from .onnx_import import ModelError, load_model, to_graph
    from .simplify import simplify

    try:
        model = load_model(onnx_path)
        graph = dataclasses.replace(simplify(to_graph(model)), float_model=_float_type(model))
    except ModelError as e:
        raise InputError(str(e)) from None
    try:
        ref = ReferenceModel(model.SerializeToString())
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / ... types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise InputError(f"{onnx_path}: onnxruntime cannot load this model: {first}") from None
    return graph, ref


def _unbounded(prop) -> str | None:
    """Why no bound can be computed, when some case leaves an input element unbounded (VNN-LIB
    2.0 allows it): then only a counterexample can be an answer (pipeline.search)."""
    import numpy as np

    for case in prop.cases:
        bad = np.flatnonzero(~(np.isfinite(case.lo) & np.isfinite(case.hi)))
        if bad.size:
            return f"input element {int(bad[0])} has no finite bounds in some case: nothing can be bounded"
    return None


def _out_of_time(t0: float) -> Result:
    return Result(Verdict.TIMEOUT, seconds=time.monotonic() - t0, reason="the time limit passed before the search")


def _float_type(model):
    """The narrowest float type the model computes in: float32 as soon as any initializer, cast
    or declared tensor is float32 (onnxruntime then rounds there), else float64."""
    import torch

    from .onnx_proto import FLOAT

    g = model.graph
    types = [t.data_type for t in g.initializer]
    types += [vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.output) + list(g.value_info)]
    types += [a.i for n in g.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"]
    return torch.float32 if FLOAT in types else torch.float64


def float_semantics(prop) -> bool:
    """Whether the query asks about the float model: a VNN-LIB 2.0 query whose variables are
    declared in a float type.  `real` (and every VNN-LIB 1.0 query, whose constants are Real)
    asks about the network as a function over the reals."""
    return prop.version == "2.0" and any(v.dtype.lower().startswith("float")
                                         for v in tuple(prop.inputs) + tuple(prop.outputs))


def _load(onnx_path, prop):
    """(graph, reference, property) for the query: one model as given, or (a mapping of network
    names to model files, or a query beyond one input and one output) the composed graph of
    every network (verifier/joint.py)."""
    from .joint import JointError, load_joint, model_paths, needs_joint

    if isinstance(onnx_path, Mapping) or needs_joint(prop):
        if prop.version != "2.0":
            raise InputError("several networks need a VNN-LIB 2.0 query")
        networks = onnx_path if isinstance(onnx_path, Mapping) else {prop.network: onnx_path}
        if not needs_joint(prop):
            try:
                return (*load_checked(model_paths(prop, networks)[prop.network]), prop)
            except JointError as e:
                raise InputError(str(e)) from None
        return load_joint(prop, networks, differential=not float_semantics(prop))
    return (*load_checked(onnx_path), prop)


def verify(onnx_path: str | os.PathLike | Mapping[str, str | os.PathLike], vnnlib_path: str | os.PathLike,
           timeout: float = 60.0, config: VerifyConfig | None = None, prop=None,
           deadline: Deadline | None = None) -> Result:
    """Decide the VNN-LIB property on the ONNX network within `timeout` seconds.

    onnx_path: the model, or for a VNN-LIB 2.0 query a mapping from each declared network that
    takes a model (all but equal-to ones) to its file.  Returns a Result: UNSAT (proved), SAT
    (with a counterexample confirmed by onnxruntime on every model: result.x the flat input
    elements, result.y the flat observed elements, both in the query's code order), UNKNOWN or
    TIMEOUT.  Raises InputError for unreadable or unsupported inputs.  `prop`: an already
    parsed property (skips parsing).
    """
    cfg = config or VerifyConfig(timeout_s=timeout)
    if config is not None and timeout != cfg.timeout_s:
        cfg = dataclasses.replace(cfg, timeout_s=timeout)
    deadline = deadline or Deadline(cfg.timeout_s)
    t0 = time.monotonic()
    prop = prop if prop is not None else load_property(vnnlib_path)
    if deadline.expired():   # the limit counts from the command's start: imports included
        return _out_of_time(t0)
    graph, ref, prop = _load(onnx_path, prop)
    result = Session(graph, ref, cfg).decide(prop, deadline)
    result.seconds = time.monotonic() - t0
    return result


class Session:
    """One model (or composed graph) loaded and checked once, then any number of properties
    over its inputs decided on it: the audit decides thousands of queries on one classifier.

    graph: the engine's float64 CPU graph (load_checked); ref: onnxruntime on the model as
    given, the judge of every counterexample."""

    def __init__(self, graph, ref, config: VerifyConfig | None = None):
        from .pipeline import choose_device

        self.graph, self.ref = graph, ref
        self.cfg = config or VerifyConfig()
        try:
            self.device = choose_device(self.cfg.device)
        except ValueError as e:
            raise InputError(str(e)) from None
        self._placed: dict = {}

    @classmethod
    def open(cls, onnx_path: str | os.PathLike, config: VerifyConfig | None = None) -> "Session":
        return cls(*load_checked(onnx_path), config)

    def _graph_for(self, prop, dtype):
        """The graph on the device in dtype, bounding the float model only when the query asks."""
        float_model = self.graph.float_model if float_semantics(prop) else None
        key = (float_model, dtype)
        if key not in self._placed:
            g = dataclasses.replace(self.graph, float_model=float_model)
            self._placed[key] = g.to(self.device, dtype)
        return self._placed[key]

    def decide(self, prop, deadline: Deadline | None = None) -> Result:
        """The verdict for a parsed property on this model, within the deadline (default: the
        config's timeout from now).  Raises InputError when the model and query disagree."""
        from .pipeline import decide, search

        unbounded = _unbounded(prop)
        return self._run(prop, deadline, lambda q: decide(q) if unbounded is None else search(q, unbounded),
                         unbounded)

    def refute_in_ball(self, prop, centre, radius: float, deadline: Deadline | None = None) -> Result:
        """UNSAT when bounds over each case's box intersected with the L2 ball |x - centre|_2 <=
        radius (CROWN's concretisation with the dual norm, alpha-CROWN, then branch and bound over
        the intersection: pipeline.refute_in_ball) refute it; else UNKNOWN (or TIMEOUT).  Never
        SAT (no search for counterexamples): the audit's L2 certificates.
        centre: the flat input; radius: a float at or above the ball's exact radius."""
        from .pipeline import refute_in_ball

        return self._run(prop, deadline, lambda q: refute_in_ball(q, centre, radius), _unbounded(prop))

    def refute_each(self, prop, deadline: Deadline | None = None) -> Result:
        """Bounds only, every case of the property at once: result.stats["refuted"] (one bool per
        case) says which are refuted; the audit's batched first pass over many samples."""
        from .pipeline import refute_each

        unbounded = _unbounded(prop)
        if unbounded is not None:
            raise InputError(unbounded)
        return self._run(prop, deadline, refute_each, None)

    def _run(self, prop, deadline, decide_fn, unbounded) -> Result:
        import torch

        from .faithful import check_faithful
        from .pipeline import Query, numeric_setup, restore_numerics, searched_region
        from .spec import SpecError

        deadline = deadline or Deadline(self.cfg.timeout_s)
        t0 = time.monotonic()
        check_faithful(self.graph, self.ref, prop if unbounded is None else searched_region(prop, 1.0))
        if deadline.expired():
            return _out_of_time(t0)
        dtype = numeric_setup(self.device)
        if not self.graph.holds_exactly_in(dtype):  # a float64 model on the GPU: bounded in float64 there
            dtype = torch.float64
        torch.manual_seed(self.cfg.seed)
        q = Query(self._graph_for(prop, dtype), prop, self.ref, self.cfg, deadline, self.device, dtype)
        try:
            result = decide_fn(q)
        except SpecError as e:
            raise InputError(str(e)) from None
        finally:
            restore_numerics()
        result.seconds = time.monotonic() - t0
        result.stats = q.stats
        if result.verdict is Verdict.SAT:
            assert result.x is not None
        return result
