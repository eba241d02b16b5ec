"""The one chokepoint for `sat`: a candidate counts only once onnxruntime, running the original
model, puts it inside the input region and its output inside the violating region."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from vnnlib.property import Case


class ReferenceModel:
    """onnxruntime on the original ONNX bytes.  inputs_as_given: the graph reads each input
    element as it is in the domain's box (verifier/joint.py's order map does not), so the box
    bounds the inputs themselves."""

    inputs_as_given = True

    def __init__(self, model_bytes: bytes):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        kinds = {"tensor(float)": np.float32, "tensor(double)": np.float64}
        if inp.type not in kinds:
            raise ValueError(f"input {inp.name!r} of type {inp.type} (float or double expected)")
        self.input_dtype = kinds[inp.type]
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        self.input_shape = tuple(dims)

    def run(self, x_flat: np.ndarray) -> np.ndarray:
        x = np.asarray(x_flat, dtype=self.input_dtype).reshape(self.input_shape)
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float64).reshape(-1)

    def place(self, x: np.ndarray, case: Case) -> np.ndarray | None:
        """The candidate moved onto the input type's values inside the case's bounds."""
        return snap_inside(x, case, self.input_dtype)


def subnormals_flushed() -> bool:
    """Whether this thread flushes subnormal numbers to zero (FTZ/DAZ, as the engine sets for
    speed while bounding): 5e-324 * 1 reads as 0 then."""
    tiny = np.array([5e-324])
    return bool((tiny * np.array([1.0]))[0] == 0.0)


@contextmanager
def ieee_numerics():
    """Run the block with IEEE arithmetic (subnormals kept) whatever the engine set, and put back
    what was set.  onnxruntime runs on this thread, so the engine's FTZ/DAZ would otherwise
    reach it: a subnormal input would then read as 0 and an output could change sign."""
    flushed = subnormals_flushed()
    if flushed:
        import torch

        torch.set_flush_denormal(False)
    try:
        yield
    finally:
        if flushed:
            import torch

            torch.set_flush_denormal(True)


def snap_inside(x: np.ndarray, case: Case, dtype=np.float32) -> np.ndarray | None:
    """x rounded to dtype and moved into the values of dtype that the case's bounds admit
    exactly (strict bounds strict), or None when x is not finite or no value of dtype lies
    within some element's bounds (then the case holds no input of that type at all)."""
    box = case.float_box(dtype)
    if box is None:
        return None
    with np.errstate(over="ignore"):
        xr = np.asarray(x, dtype=np.float64).reshape(-1).astype(dtype)
    if xr.shape != box[0].shape or not np.all(np.isfinite(xr)):
        return None
    return np.minimum(np.maximum(xr, box[0]), box[1])


PROJECTIONS = 32


def _into_rows(x: np.ndarray, A: np.ndarray, b: np.ndarray, box, dtype) -> np.ndarray:
    """x moved onto the float images of the linear input rows A x <= b by cyclic projections,
    each aimed a few ulps of dtype inside (so that rounding to dtype keeps it there), within the
    float box.  Only a candidate: confirm_sat still checks it exactly."""
    y = x.astype(np.float64)
    lo, hi = box[0].astype(np.float64), box[1].astype(np.float64)
    eps = 16 * np.finfo(dtype).eps
    norms = np.einsum("ij,ij->i", A, A)
    for _ in range(PROJECTIONS):
        viol = A @ y - b
        margin = eps * (np.abs(b) + np.abs(A) @ np.abs(y) + 1e-30)
        bad = np.flatnonzero((viol + margin > 0) & (norms > 0))
        if bad.size == 0:
            break
        for r in bad:
            v = A[r] @ y - b[r] + margin[r]
            if v > 0:
                y = np.clip(y - (v / norms[r]) * A[r], lo, hi)
    return np.minimum(np.maximum(y.astype(dtype), box[0]), box[1])


@dataclass
class Confirmed:
    x: np.ndarray
    y: np.ndarray


def confirm_sat(ref: ReferenceModel, case: Case, x_flat: np.ndarray) -> Confirmed | None:
    """Confirmed counterexample for this case from candidate x, or None.

    No tolerance anywhere: the input, as the model's type holds it, must meet every input
    comparison of the case exactly (rational arithmetic), and onnxruntime's output for it, run
    with IEEE arithmetic, must meet every comparison of one conjunct exactly."""
    with ieee_numerics():      # nextafter and onnxruntime too need subnormals
        x = ref.place(x_flat, case)
        if x is None:
            return None
        if not case.contains_input(x.astype(np.float64)) and case.A_in is not None:
            x = _into_rows(x, case.A_in, case.b_in, case.float_box(ref.input_dtype), ref.input_dtype)
        if not case.contains_input(x.astype(np.float64)):
            return None
        y = ref.run(x)
    if not np.all(np.isfinite(y)) or not case.violated_by(y):
        return None
    return Confirmed(x, y)
