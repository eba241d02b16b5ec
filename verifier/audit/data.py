"""The data set of an audit, read and checked before any work: x (N, *s) for a model whose input
is (1, *s), y (N,) integer labels of its classes, every value finite and inside the valid input
range when one is given."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np


class AuditInputError(Exception):
    """The model, the data or the arguments of an audit cannot be used (one line, for exit 2)."""


def load_data(path: str | Path, input_shape: tuple[int, ...], n_classes: int,
              input_range: tuple[float, float] | None, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, *s) in the model's input type, y (N,) int64), or AuditInputError with the reason.

    input_shape: the model's input shape, batch dimension (1) included.  Values are converted to
    the model's input type only when that leaves them unchanged (a float64 value that float32
    cannot hold would make the audit certify a ball around another point)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise AuditInputError(f"{path}: no array {missing[0]!r} (the data needs x and y)")
            x, y = f["x"], f["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise AuditInputError(f"{path}: cannot read the data as .npz: {e}") from None
    want = tuple(input_shape[1:]) if input_shape and input_shape[0] == 1 else tuple(input_shape)
    if x.ndim < 1 or tuple(x.shape[1:]) != want:
        raise AuditInputError(f"{path}: x has shape {tuple(x.shape)}, the model takes (N, "
                              f"{', '.join(map(str, want))}) (its input is {tuple(input_shape)})")
    if x.dtype.kind != "f":
        raise AuditInputError(f"{path}: x holds {x.dtype}, floats expected")
    if y.shape != (x.shape[0],):
        raise AuditInputError(f"{path}: y has shape {tuple(y.shape)}, ({x.shape[0]},) expected")
    if y.dtype.kind not in "iu":
        raise AuditInputError(f"{path}: y holds {y.dtype}, integer labels expected")
    if len(x) == 0:
        raise AuditInputError(f"{path}: the data holds no sample")
    if not np.all(np.isfinite(x)):
        bad = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).any(axis=1))[0])
        raise AuditInputError(f"{path}: sample {bad} holds NaN or an infinity")
    if y.min() < 0 or y.max() >= n_classes:
        bad = int(np.flatnonzero((y < 0) | (y >= n_classes))[0])
        raise AuditInputError(f"{path}: label {int(y[bad])} of sample {bad} is not one of the model's "
                              f"{n_classes} classes")
    if input_range is not None:
        a, b = input_range
        out = (x < a) | (x > b)
        if out.any():
            bad = int(np.flatnonzero(out.reshape(len(x), -1).any(axis=1))[0])
            raise AuditInputError(f"{path}: sample {bad} lies outside the input range [{a}, {b}]")
    cast = x.astype(dtype)
    if not np.array_equal(cast.astype(np.float64), x.astype(np.float64)):
        raise AuditInputError(f"{path}: x holds values that the model's input type "
                              f"({np.dtype(dtype).name}) cannot represent exactly; convert the data first")
    return cast, y.astype(np.int64)
