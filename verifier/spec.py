"""The property in tensor form, one row of the batch per property case.

A case is an input box plus a disjunction of conjuncts over the outputs; each conjunct is a set
of linear rows c.y + d <= 0 (< 0 where strict).  All rows of a case are stacked (Q of them) and
conj[k, r] is the conjunct row r belongs to (-1: none, a padding row or one left out).  A case
is *refuted* when every conjunct has a row whose sound lower bound over the box is > 0: no
output there can meet all of that conjunct's rows.  The query is unsat iff every case is
refuted, sat iff some input of some case meets every row of some conjunct.

Per-conjunct questions are segment reductions of per-row values over conj (conjunct_max), so
that memory grows with the rows, K x (Q + J), never with rows times conjuncts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vnnlib.property import Property

from .budget import fitting


class SpecError(Exception):
    """The property does not fit the network."""


@dataclass(frozen=True)
class Cases:
    """lo, hi: (K, *input_shape); C: (K, Q, n_out); d: (K, Q); conj: (K, Q) int64, the conjunct
    of case k that row r belongs to, in [0, J), or -1 for a row of none (padding, or a row left
    out); valid: (K, J) bool (conjunct j exists in case k; a valid conjunct without rows is met
    by every output); case: (K,) index into Property.cases; strict: (K, Q) bool, the row means
    c.y + d < 0 (None: no row is strict); rows: the case's comparisons over several inputs as
    float rows G x + g <= 0 implied by the exact ones, G (K, R, *input_shape), g (K, R) (-inf on
    padding rows), or None when no case has any."""

    lo: Tensor
    hi: Tensor
    C: Tensor
    d: Tensor
    conj: Tensor
    valid: Tensor
    case: np.ndarray
    strict: Tensor | None = None
    rows: tuple[Tensor, Tensor] | None = None

    def __len__(self) -> int:
        return self.lo.shape[0]

    def select(self, idx) -> "Cases":
        i = torch.as_tensor(np.asarray(idx, dtype=np.int64), device=self.lo.device)
        return Cases(self.lo[i], self.hi[i], self.C[i], self.d[i], self.conj[i], self.valid[i],
                     self.case[np.asarray(idx, dtype=np.int64)], None if self.strict is None else self.strict[i],
                     None if self.rows is None else (self.rows[0][i], self.rows[1][i]))

    def with_box(self, lo: Tensor, hi: Tensor, parent: Tensor) -> "Cases":
        """The same rows over new boxes; parent[i] is the case whose rows box i inherits."""
        return Cases(lo, hi, self.C[parent], self.d[parent], self.conj[parent], self.valid[parent],
                     self.case[parent.cpu().numpy()], None if self.strict is None else self.strict[parent],
                     None if self.rows is None else (self.rows[0][parent], self.rows[1][parent]))


def build_cases(prop: Property, input_shape: tuple[int, ...], n_out: int,
                dtype: torch.dtype, device: torch.device, rows: bool = True) -> Cases:
    """rows: keep the comparisons over several inputs (Cases.rows); only valid when the graph
    reads each input element as it lies in the box (confirm.ReferenceModel.inputs_as_given)."""
    n_in = int(np.prod(input_shape, dtype=np.int64))
    sizes = []
    for case in prop.cases:
        if case.lo.shape[0] != n_in:
            raise SpecError(f"the property constrains {case.lo.shape[0]} input elements "
                            f"but the network input has {n_in}")
        region = case.region
        if region.C.shape[0] and region.C.shape[1] != n_out:
            raise SpecError(f"the property reads {region.C.shape[1]} output elements but the network has {n_out}")
        sizes.append(region.sizes())
    K = len(prop.cases)
    J = max([len(s) for s in sizes], default=1) or 1
    Q = max([int(s.sum()) for s in sizes], default=1) or 1
    C = np.zeros((K, Q, n_out))
    d = np.zeros((K, Q))
    conj = np.full((K, Q), -1, dtype=np.int64)
    strict = np.zeros((K, Q), dtype=bool)
    valid = np.zeros((K, J), dtype=bool)
    lo, hi = np.empty((K, n_in)), np.empty((K, n_in))
    for k, (case, size) in enumerate(zip(prop.cases, sizes)):
        lo[k], hi[k] = case.lo, case.hi
        valid[k, :len(size)] = True
        m = int(size.sum())
        if m:
            C[k, :m], d[k, :m], strict[k, :m] = case.region.C, case.region.d, case.region.strict
            conj[k, :m] = np.repeat(np.arange(len(size)), size)
    # in a narrower dtype (float32 on a GPU) a row whose coefficients do not all fit leaves its
    # conjunct (which only enlarges the violating region), and d is rounded down, as in float64
    Ct = torch.from_numpy(C).to(dtype)
    if dtype != torch.float64:
        inexact = (Ct.to(torch.float64) != torch.from_numpy(C)).any(-1).numpy()
        conj[inexact] = -1
    del C
    shape = (K,) + tuple(input_shape)
    return Cases(_round_box(lo, dtype, device, -1).reshape(shape), _round_box(hi, dtype, device, +1).reshape(shape),
                 Ct.to(device), _round_box(d, dtype, device, -1),
                 torch.as_tensor(conj, device=device), torch.as_tensor(valid, device=device),
                 np.arange(K, dtype=np.int64), torch.as_tensor(strict, device=device),
                 _input_rows(prop, input_shape, dtype, device) if rows else None)


def _input_rows(prop: Property, input_shape, dtype: torch.dtype, device) -> tuple[Tensor, Tensor] | None:
    """Every case's comparisons over several inputs as rows G x + g <= 0 that hold wherever the
    exact ones do (vnnlib.lower.float_row: exact coefficients, the constant rounded down; in a
    narrower dtype a row whose coefficients do not fit is left out and g is rounded down again)."""
    from vnnlib.lower import float_row

    per_case = []
    for case in prop.cases:
        rows = [(lin.vars, float_row(lin)) for lin in case.lins if len(lin.vars) > 1]
        per_case.append([(v, r) for v, r in rows if r is not None])
    R = max((len(r) for r in per_case), default=0)
    if R == 0:
        return None
    n = int(np.prod(input_shape, dtype=np.int64))
    G = np.zeros((len(per_case), R, n))
    g = np.full((len(per_case), R), -np.inf)
    for k, rows in enumerate(per_case):
        for r, (vs, (coefs, const, down)) in enumerate(rows):
            G[k, r, list(vs)] = coefs
            g[k, r] = np.nextafter(const, -np.inf) if down else const
    Gt = torch.as_tensor(G, dtype=dtype)
    fits = (Gt.to(torch.float64) == torch.as_tensor(G)).all(-1)
    gt = torch.where(fits, _round_box(g, dtype, "cpu", -1), torch.full_like(Gt[..., 0], -torch.inf))
    return Gt.reshape((len(per_case), R) + tuple(input_shape)).to(device), gt.to(device)


def infeasible(cs: Cases) -> Tensor:
    """(K,) the domain's box holds no point of its case's rows: a rigorous lower bound of some
    row G_r x + g_r over the box is > 0.  A domain that holds no input is refuted."""
    if cs.rows is None:
        return torch.zeros(len(cs), dtype=torch.bool, device=cs.lo.device)
    from .bounds.backward import concretise_lower

    G, g = cs.rows
    live = torch.isfinite(g)
    const = torch.where(live, g, torch.zeros_like(g))
    lb = concretise_lower(G, const, torch.zeros_like(g), cs.lo, cs.hi)
    return (live & torch.isfinite(lb) & (lb > 0)).any(-1)


def _round_box(a: np.ndarray, dtype: torch.dtype, device, direction: int) -> Tensor:
    """The float64 bounds in dtype, rounded outwards (down for lo, up for hi) so that the box
    in a narrower type still contains every point of the declared one."""
    t = torch.as_tensor(a, dtype=dtype)
    back = t.to(torch.float64)
    ref = torch.as_tensor(a, dtype=torch.float64)
    wrong = back > ref if direction < 0 else back < ref
    if bool(wrong.any()):
        t = torch.where(wrong, torch.nextafter(t, torch.full_like(t, direction * torch.inf)), t)
    return t.to(device)


def conjunct_max(cs: Cases, values: Tensor) -> Tensor:
    """values (K, *mid, Q) -> (K, *mid, J): per conjunct the largest value of its rows (NaN
    when one is NaN; the type's lowest value, -inf for floats, when it has none)."""
    K, Q = cs.conj.shape
    J = cs.valid.shape[1]
    mid = values.shape[1:-1]
    idx = (cs.conj + 1).reshape((K,) + (1,) * len(mid) + (Q,)).expand(values.shape)
    low = -torch.inf if values.dtype.is_floating_point else torch.iinfo(values.dtype).min
    out = values.new_full(values.shape[:-1] + (J + 1,), low)   # slot 0 collects the rows of no conjunct
    return out.scatter_reduce(-1, idx, values, "amax", include_self=True)[..., 1:]


def open_rows(cs: Cases) -> Tensor:
    """(K, Q) bool: the row belongs to a valid conjunct."""
    has = cs.conj >= 0
    return has & torch.gather(cs.valid, 1, cs.conj.clamp(min=0))


def violation(cs: Cases, y: Tensor, memory: int | None = None) -> Tensor:
    """How far outputs are from the violating region: y (K, R, n_out) -> (K, R); <= 0 means
    some conjunct's rows all hold (< 0 is needed for strict rows; confirm_sat checks exactly).
    memory: bytes the working tensors may take (budget.fitting's default when None): the
    points are taken a few at a time."""
    K, R = y.shape[:2]
    Q, J = cs.C.shape[1], cs.valid.shape[1]
    fixed = max(1, K) * (32 * Q + 8 * J)       # the slots below and their temporaries
    step = fitting(R, violation_point_bytes(cs, y.element_size()), None if memory is None else memory - fixed)
    # each row goes to its conjunct's slot (1 + j), rows of no valid conjunct to slot 0; a slot
    # starts at -inf (a valid conjunct without rows is met everywhere), an invalid one's at +inf
    slot = torch.where(open_rows(cs), cs.conj + 1, 0)
    start = torch.cat([y.new_full((K, 1), -torch.inf),
                       torch.where(cs.valid, -torch.inf, torch.inf).to(y.dtype)], 1)
    parts = [_violation(cs, y[:, s:s + step], slot, start) for s in range(0, R, step)]
    return torch.cat(parts, 1) if parts else y.new_zeros((K, 0))


def violation_point_bytes(cs: Cases, itemsize: int, grad: bool = False) -> int:
    """Working bytes of violation() at one point of every case: the rows' values and the
    per-conjunct maxima, and for its gradient what autograd keeps and computes of them (the
    peak resident memory of 8 points over 10^6 rows grew by 1.4 and 7.6 times their bytes)."""
    return (8 if grad else 2) * max(1, len(cs)) * (cs.C.shape[1] + cs.valid.shape[1] + 1) * itemsize


def _violation(cs: Cases, y: Tensor, slot: Tensor, start: Tensor) -> Tensor:
    K, R = y.shape[:2]
    rows = torch.baddbmm(cs.d.unsqueeze(1), y, cs.C.transpose(1, 2))          # (K, R, Q)
    per_conj = start.unsqueeze(1).expand(K, R, start.shape[1]).clone()          # (K, R, 1 + J)
    per_conj.scatter_reduce_(2, slot.unsqueeze(1).expand(rows.shape), rows, "amax", include_self=True)
    return per_conj[..., 1:].amin(-1)


def conjuncts_refuted(cs: Cases, lb: Tensor, tol: float) -> Tensor:
    """lb: (K, Q) rigorous lower bounds of the rows (rounding accounted for) -> (K, J):
    conjunct j of case k is refuted.  Only a finite bound strictly above tol (0: see
    bound_tolerance) proves anything, or for a strict row (c.y + d < 0) one at or above it:
    a row that is never negative never holds strictly.  +inf and NaN never prove anything."""
    above = (lb > tol) if cs.strict is None else ((lb > tol) | (cs.strict & (lb >= tol)))
    ok = torch.isfinite(lb) & above
    return conjunct_max(cs, ok.to(torch.uint8)) > 0


def refuted(cs: Cases, lb: Tensor, tol: float) -> Tensor:
    """(K,) every existing conjunct of the case is refuted."""
    return (conjuncts_refuted(cs, lb, tol) | ~cs.valid).all(-1)


def bound_tolerance(dtype: torch.dtype) -> float:
    """Margin an unsat proof must clear: none, in either dtype.  Every bound already carries a
    proven bound on its own rounding error, relative to the magnitudes involved
    (verifier/bounds/rounding.py); a fixed absolute margin would be both too large for small
    outputs and too small for large ones (an output near 2^30 rounds by ~1e-7 in float64)."""
    return 0.0
