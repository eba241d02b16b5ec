"""Incomplete bounds on whole subproblems: IBP, CROWN and alpha-CROWN lower bounds of every
row c.y + d over each subproblem's box.

Each row is bounded on its own (its own coefficients, planes and slopes), so the rows can be
bounded a block at a time: every pass over them runs in blocks of (subproblems, rows) whose
working tensors fit `memory` bytes (budget.working_memory of the query's budget; the default of
budget.fitting when None), and raises budget.OutOfMemory when not even one row of one
subproblem fits.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from .bounds.alpha import AlphaConfig, alpha_lower
from .bounds.backward import CHUNK_ELEMS, crown_intermediate, crown_output, magnitudes
from .bounds.interval import interval_bounds
from .bounds.rounding import coef, floor, lower, magnitude
from .budget import DEFAULT_WORK, Deadline, fitting
from .ir import Graph
from .spec import Cases, conjuncts_refuted, open_rows, refuted

Block = tuple[slice, slice]   # (subproblems, rows)

# working bytes per (subproblem, row) pair, in elements of the bound's type per element of the
# graph's widest value (CROWN) or of all its values (alpha-CROWN): the peak resident memory of
# 20,000 CROWN rows and 5,000 alpha-CROWN rows on 5-100-100-5 and 5-400-400-5 ReLU networks
# grew by 6.2 and 8.4 of them (the coefficients in flight, their magnitudes and products with
# the planes; the slopes with Adam's two moments and gradients, and what autograd keeps)
CROWN_PER_ELEMENT = 8
ALPHA_PER_ELEMENT = 12
# and per subproblem, whatever its rows: interval bounds (lo, hi) and magnitudes of every value,
# the activations' planes and bounds, and temporaries of each (crown_intermediate on 1,000 boxes
# of a 1-128x5-1 ReLU network kept 19 of them besides its back-substitution's chunk)
CASE_PER_ELEMENT = 24


def case_bytes(graph: Graph, itemsize: int) -> int:
    """Working bytes of one subproblem besides its rows (interval bounds, magnitudes, planes)."""
    return itemsize * (2 * graph.input_size + CASE_PER_ELEMENT * sum(n.size for n in graph.nodes))


def crown_pair_bytes(graph: Graph, itemsize: int) -> int:
    """Working bytes of one row of one subproblem in a CROWN pass to the output."""
    return itemsize * (2 * graph.input_size + CROWN_PER_ELEMENT * max([n.size for n in graph.nodes] + [1]))


def alpha_pair_bytes(graph: Graph, itemsize: int) -> int:
    """Working bytes of one row of one subproblem in alpha-CROWN (slopes, moments, autograd)."""
    return itemsize * (2 * graph.input_size + ALPHA_PER_ELEMENT * sum(n.size for n in graph.nodes))


def intermediate_elems(memory: int | None, itemsize: int) -> int:
    """crown_intermediate's budget_elems (objective rows times input and widest value in flight:
    2.7 bytes of the bound's type per element measured, 4 allowed) within memory bytes, and
    never over its default."""
    return max(1, min(CHUNK_ELEMS, (DEFAULT_WORK if memory is None else memory) // (4 * itemsize)))


def blocks(P: int, Q: int, pair_bytes: int, memory: int | None, per_case: int = 0) -> list[Block]:
    """(subproblems, rows) blocks that cover P x Q, each within memory bytes at pair_bytes per
    pair and per_case bytes per subproblem: all subproblems and as many rows as fit, or when
    not even one row of all of them fits, fewer subproblems at a time.  Subproblem-major: the
    row blocks of one group of subproblems follow each other."""
    per = fitting(P, per_case + pair_bytes, memory)   # subproblems with one row each
    room = (DEFAULT_WORK if memory is None else memory) - min(P, per) * per_case
    rows = fitting(Q, min(P, per) * pair_bytes, room)
    return [(slice(b, min(P, b + per)), slice(r, min(Q, r + rows)))
            for b in range(0, max(P, 1), per) for r in range(0, max(Q, 1), rows)]


def _take(t: Mapping | None, b: slice) -> dict | None:
    """Per-subproblem tensors (or (lo, hi) pairs) of the subproblems b."""
    if t is None:
        return None
    return {k: (v[0][b], v[1][b]) if isinstance(v, tuple) else v[b] for k, v in t.items()}


def ibp_lower(graph: Graph, sp: Cases, memory: int | None = None) -> Tensor:
    """(P, k) rigorous lower bounds of the rows from interval bounds of the output: the sum of
    the n products and d rounds by at most gamma(n + 1) of their magnitudes (plus 2 tiny per
    operation and per operand for flushed subnormals).  A row that reads one element with
    coefficient +-1 and no constant (y_i < 0, say) takes that element's bound as it is: no
    arithmetic, so a bound of exactly 0 (a ReLU's output) refutes a strict row."""
    P, Q = sp.d.shape
    item = sp.d.element_size()
    lb = sp.d.new_empty((P, Q))
    at = None
    for b, r in blocks(P, Q, 8 * (sp.C.shape[-1] + 1) * item, memory, case_bytes(graph, item)):  # ~8 row temporaries
        if b != at:
            ylo, yhi = interval_bounds(graph, sp.lo[b], sp.hi[b])[graph.output_name]
            n = ylo.shape[0]
            ylo, yhi, at = ylo.reshape(n, 1, -1), yhi.reshape(n, 1, -1), b
        lb[b, r] = _ibp_rows(sp.C[b, r], sp.d[b, r], ylo, yhi)
    return lb


def _ibp_rows(C: Tensor, d: Tensor, ylo: Tensor, yhi: Tensor) -> Tensor:
    t = C.clamp(min=0) * ylo + C.clamp(max=0) * yhi
    n = t.shape[-1]
    err = coef(n + 1, n + 3, t.dtype) * (t.abs().sum(-1) + d.abs())
    err = err + floor(t.dtype, 2 * n + 2, C.abs().sum(-1), magnitude(ylo, yhi).sum(-1))
    return torch.maximum(lower(t.sum(-1) + d, err), _copied_bounds(C, d, ylo, yhi))


def _copied_bounds(C: Tensor, d: Tensor, ylo: Tensor, yhi: Tensor) -> Tensor:
    """(P, k): for rows +-y_i + 0, y_i's lower bound or minus its upper bound, selected and negated
    without arithmetic (a sign flip; subnormal values, which flushing could misread, excluded);
    -inf for every other row."""
    single = ((C != 0).sum(-1) == 1) & (C.abs().amax(-1) == 1) & (d == 0)
    i = C.abs().argmax(-1, keepdim=True)
    sign = C.gather(-1, i).squeeze(-1)
    lo_i = ylo.expand_as(C).gather(-1, i).squeeze(-1)
    hi_i = yhi.expand_as(C).gather(-1, i).squeeze(-1)
    v = torch.where(sign > 0, lo_i, -hi_i)
    normal = (v == 0) | (v.abs() >= torch.finfo(v.dtype).tiny)
    return torch.where(single & normal & ~torch.isnan(v), v, torch.full_like(v, -torch.inf))


def crown_lower(graph: Graph, sp: Cases, deadline: Deadline | None = None, record: dict | None = None,
                memory: int | None = None) -> tuple[Tensor, dict]:
    """(P, k) CROWN lower bounds of the rows, and the intermediate bounds used.  record: receives
    the input coefficients of the final pass (record[graph.input_name]: (P, k, *input_shape)),
    unless they alone would take over half of memory.  Subproblems go a group at a time."""
    P, Q = sp.d.shape
    item = sp.d.element_size()
    fits = 2 * P * Q * graph.input_size * item <= (DEFAULT_WORK if memory is None else memory)
    # half of memory for the cases' own bounds, half for the back-substitution's chunks
    per = fitting(P, case_bytes(graph, item) + crown_pair_bytes(graph, item),
                  None if memory is None else memory // 2, "one case's bounds")
    if per >= P:
        return _crown_lower(graph, sp, deadline, record if fits else None, memory)
    lb = sp.d.new_empty((P, Q))
    pre: dict = {}
    A_in = sp.lo.new_zeros((P, Q) + tuple(graph.input_shape)) if fits and record is not None else None
    reached = False
    for s in range(0, P, per):
        b = slice(s, min(P, s + per))
        rec: dict | None = {} if A_in is not None else None
        lb[b], part = _crown_lower(graph, sp.select(range(b.start, b.stop)), deadline, rec, memory)
        for k, (plo, phi) in part.items():   # filled in place: no second copy of the bounds
            if k not in pre:
                pre[k] = (plo.new_empty((P,) + plo.shape[1:]), phi.new_empty((P,) + phi.shape[1:]))
            pre[k][0][b], pre[k][1][b] = plo, phi
        if A_in is not None and graph.input_name in rec:
            A_in[b] = rec[graph.input_name]
            reached = True
    if reached:   # as crown_output: no entry when the output does not depend on the input
        record[graph.input_name] = A_in
    return lb, pre


def _crown_lower(graph: Graph, sp: Cases, deadline: Deadline | None, record: dict | None,
                 memory: int | None) -> tuple[Tensor, dict]:
    with torch.no_grad():
        pre = crown_intermediate(graph, sp.lo, sp.hi, deadline=deadline,
                                 budget_elems=intermediate_elems(None if memory is None else memory // 2,
                                                                 sp.d.element_size()))
        lb = output_lower(graph, sp, pre, memory, record)
        # on wide boxes with many unstable ReLUs CROWN can be looser than IBP on some rows
        lb = torch.maximum(lb, ibp_lower(graph, sp, memory))
    return lb, pre


def _ball_block(ball, b):
    """The block b of a per-subproblem L2 ball (centre (P, *input_shape), radius (P,)), or None."""
    return None if ball is None else (ball[0][b], ball[1][b])


def output_lower(graph: Graph, sp: Cases, pre: Mapping, memory: int | None = None,
                 record: dict | None = None, ball=None) -> Tensor:
    """(P, Q) CROWN lower bounds of the rows c.y + d given the activation input bounds pre
    ((P, *shape) each), d's addition rounded once more.  record: receives the input
    coefficients of every row, record[graph.input_name] (P, Q, *input_shape) (not counted in
    memory: the caller holds them).  ball: (centre (P, *input_shape), radius (P,)): the bounds
    are taken over each box intersected with its L2 ball (bounds/ball.py)."""
    P, Q = sp.d.shape
    item = sp.d.element_size()
    keep_in = record is not None
    with torch.no_grad():
        lb = sp.d.new_empty((P, Q))
        A_in = sp.lo.new_zeros((P, Q) + tuple(graph.input_shape)) if keep_in else None
        at, reached = None, False
        for b, r in blocks(P, Q, crown_pair_bytes(graph, item), memory, case_bytes(graph, item)):
            if b != at:   # the magnitudes and planes of these subproblems, shared by their row blocks
                pre_b = _take(pre, b)
                mags, planes, at = magnitudes(graph, sp.lo[b], sp.hi[b], pre_b, upto=graph.output_name), {}, b
            rec: dict | None = {} if keep_in else None
            lb[b, r] = lower(crown_output(graph, sp.lo[b], sp.hi[b], sp.C[b, r], pre_b, record=rec,
                                          mags=mags, planes=planes, ball=_ball_block(ball, b)) + sp.d[b, r])
            if keep_in and graph.input_name in rec:
                A_in[b, r] = rec[graph.input_name]
                reached = True
            del rec
    if reached:   # as crown_output: no entry when the output does not depend on the input
        record[graph.input_name] = A_in
    return lb


def row_coefficients(graph: Graph, sp: Cases, pre: Mapping, rows: Tensor) -> dict[str, Tensor]:
    """The CROWN coefficients of one row per subproblem (rows: (P,) indices): reaching every
    activation's output ({name: (P, *shape)}) and the input (graph.input_name)."""
    P = len(sp)
    record: dict = {}
    with torch.no_grad():
        C = sp.C[torch.arange(P, device=rows.device), rows].unsqueeze(1)
        crown_output(graph, sp.lo, sp.hi, C, pre, record=record)
    return {k: v[:, 0] for k, v in record.items()}


def alpha_crown_lower(graph: Graph, sp: Cases, pre: dict, cfg: AlphaConfig, deadline: Deadline,
                      tol: float, memory: int | None = None, prior: Tensor | None = None,
                      signs: Mapping | None = None, warm: dict | None = None, keep: dict | None = None,
                      points: Mapping | None = None, ball=None) -> Tensor:
    """(P, Q) alpha-CROWN lower bounds of the rows (bounds.alpha.alpha_lower: signs, warm, keep,
    points as there; ball as output_lower's), optimised until every case is refuted or the
    deadline passes.  When the
    rows come in several blocks, prior (known lower bounds of the rows, e.g. CROWN's) says which
    rows still matter: a block whose rows all belong to refuted conjuncts or cases is skipped
    (its bounds stay at prior), and the result is at least prior; keep is then filled only when
    every block ran with all subproblems."""
    P, Q = sp.d.shape
    whole = lambda lb: bool(refuted(sp, lb, tol).all())
    item = sp.d.element_size()
    parts = blocks(P, Q, alpha_pair_bytes(graph, item), memory, case_bytes(graph, item))
    if len(parts) == 1:
        return alpha_lower(graph, sp.lo, sp.hi, sp.C, sp.d, pre, cfg, deadline, whole, signs=signs,
                           warm=warm, keep=keep, points=points, ball=ball)
    lb = sp.d.new_full((P, Q), -torch.inf) if prior is None else prior.clone()
    kept: list[dict] = []
    for b, r in parts:
        if whole(lb) or not bool(_matter(sp, lb, tol)[b, r].any()):
            continue

        def done(part: Tensor, b=b, r=r) -> bool:
            cur = lb.clone()
            cur[b, r] = torch.maximum(cur[b, r], part)
            return whole(cur)

        kp: dict | None = {} if keep is not None else None
        part = alpha_lower(graph, sp.lo[b], sp.hi[b], sp.C[b, r], sp.d[b, r], _take(pre, b), cfg, deadline, done,
                           signs=_take(signs, b), warm=_warm_block(warm, b, r), keep=kp, points=_take(points, b),
                           ball=_ball_block(ball, b))
        lb[b, r] = torch.maximum(lb[b, r], part)
        kept.append((b, r, kp))
    if keep is not None and len(kept) == len(parts) and all(b == slice(0, P) for b, _, _ in kept):
        keep.update({g: {k: torch.cat([kp[g][k] for _, _, kp in kept], 1) for k in kept[0][2][g]}
                     for g in kept[0][2]})
    return lb


def _matter(sp: Cases, lb: Tensor, tol: float) -> Tensor:
    """(P, Q): rows of conjuncts not yet refuted, in cases not yet refuted."""
    conj_done = conjuncts_refuted(sp, lb, tol)
    row_done = torch.gather(conj_done, 1, sp.conj.clamp(min=0))
    return open_rows(sp) & ~row_done & ~refuted(sp, lb, tol).unsqueeze(1)


def _warm_block(warm: dict | None, b: slice, r: slice) -> dict | None:
    """A warm start ({"slopes": ..., "betas": ...}, (P, Q, *shape) each) for the block."""
    return None if warm is None else {g: {k: v[b, r] for k, v in part.items()} for g, part in warm.items()}
