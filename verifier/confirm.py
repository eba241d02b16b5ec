"""The one chokepoint for `sat`: a candidate counts only once onnxruntime, running the original
model, puts it inside the input region and its output inside the violating region."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vnnlib.property import Case

INPUT_TOL = 1e-6  # VNN-COMP's tolerance on input bounds; we aim strictly inside anyway


class ReferenceModel:
    """onnxruntime on the original ONNX bytes."""

    def __init__(self, model_bytes: bytes):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float64 if "double" in inp.type else np.float32
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        self.input_shape = tuple(dims)

    def run(self, x_flat: np.ndarray) -> np.ndarray:
        x = np.asarray(x_flat, dtype=self.input_dtype).reshape(self.input_shape)
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float64).reshape(-1)


def snap_inside(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, dtype=np.float32) -> np.ndarray:
    """x clipped to [lo, hi] and rounded to dtype, nudged one ulp inwards wherever rounding
    pushed it outside (unless the box is thinner than an ulp)."""
    xc = np.clip(np.asarray(x, dtype=np.float64), lo, hi)
    xr = xc.astype(dtype)
    below = xr.astype(np.float64) < lo
    xr[below] = np.nextafter(xr[below], dtype(np.inf))
    above = xr.astype(np.float64) > hi
    xr[above] = np.nextafter(xr[above], dtype(-np.inf))
    return xr


@dataclass
class Confirmed:
    x: np.ndarray
    y: np.ndarray


def confirm_sat(ref: ReferenceModel, case: Case, x_flat: np.ndarray) -> Confirmed | None:
    """Confirmed counterexample for this case from candidate x, or None."""
    x = snap_inside(x_flat, case.lo, case.hi, ref.input_dtype)
    if not case.contains_input(x.astype(np.float64), tol=INPUT_TOL):
        return None
    y = ref.run(x)
    if not np.all(np.isfinite(y)) or not case.violated_by(y):
        return None
    return Confirmed(x, y)
