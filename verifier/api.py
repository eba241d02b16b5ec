"""The Python API: verifier.verify(onnx_path, vnnlib_path, timeout=...) -> Result."""
from __future__ import annotations

import dataclasses
import logging
import os
import time

from .budget import Deadline
from .config import VerifyConfig
from .verdict import Result, Verdict

log = logging.getLogger("verifier")


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


def verify(onnx_path: str | os.PathLike, vnnlib_path: str | os.PathLike, timeout: float = 60.0,
           config: VerifyConfig | None = None, prop=None, deadline: Deadline | None = None) -> Result:
    """Decide the VNN-LIB property on the ONNX network within `timeout` seconds.

    Returns a Result: UNSAT (proved), SAT (with a counterexample confirmed by onnxruntime:
    result.x the flat input, result.y the flat output), UNKNOWN or TIMEOUT.  Raises InputError
    for unreadable or unsupported inputs.  `prop`: an already parsed property (skips parsing).
    """
    cfg = config or VerifyConfig(timeout_s=timeout)
    if config is not None and timeout != cfg.timeout_s:
        cfg = dataclasses.replace(cfg, timeout_s=timeout)
    deadline = deadline or Deadline(cfg.timeout_s)
    t0 = time.monotonic()
    prop = prop if prop is not None else load_property(vnnlib_path)
    import torch

    from .confirm import ReferenceModel
    from .onnx_import import ModelError, load_model, to_graph
    from .pipeline import Query, choose_device, decide, numeric_setup, restore_numerics
    from .simplify import simplify
    from .spec import SpecError

    try:
        model = load_model(onnx_path)
        graph = simplify(to_graph(model))
    except ModelError as e:
        raise InputError(str(e)) from None
    try:
        ref = ReferenceModel(model.SerializeToString())
    except Exception as e:  # onnxruntime refuses some models (e.g. mixed float types): no sat then
        log.warning("onnxruntime cannot run this model (%s): counterexamples cannot be confirmed",
                    str(e).splitlines()[0][:120])
        ref = None
    try:
        device = choose_device(cfg.device)
    except ValueError as e:
        raise InputError(str(e)) from None
    dtype = numeric_setup(device)
    torch.manual_seed(cfg.seed)
    graph = graph.to(device, dtype)
    q = Query(graph, prop, ref, cfg, deadline, device, dtype)
    try:
        result = decide(q)
    except SpecError as e:
        raise InputError(str(e)) from None
    finally:
        restore_numerics()
    result.seconds = time.monotonic() - t0
    result.stats = q.stats
    if result.verdict is Verdict.SAT:
        assert result.x is not None
    return result
