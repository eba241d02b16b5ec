"""Branch and bound over the activations, for networks with many inputs (GenBaB-style).

A domain is a case plus split decisions on some activation inputs: a sign (+1: input >= p,
-1: input <= p) and the point p (0 for a kink at 0, such as ReLU's; stored only for the other
activations).  Decisions are enforced soundly by clamping the decided neuron's input bounds, so
its rule relaxes it on the narrower interval (exactly, for a kink), and every later layer's
bounds are recomputed by back-substitution from the clamped ones (children start from their
parent's bounds, valid on the smaller region); beta multipliers carry the decisions back to
earlier layers.  The two children of a split cover their parent, so refuting all leaves refutes
the case.  Each activation's rule says where a split pays and how much (ActivationRule.
branch_gain): the neuron with the largest estimated gain in the weakest open row is split.
A product of two variables is split on its first factor's interval; relational difference nodes
are never split and stay relaxed.  When every
nonlinearity is a kink and all are decided, the network is affine on the domain and an LP
decides it.

Over an L2 ball (`ball`, bounds/ball.py) every bound of every domain is concretised over its box
intersected with the ball: the intermediate bounds, CROWN and alpha/beta-CROWN.  Those bounds
hold on the ball only, so nothing is ever confirmed as a counterexample there (no candidate, no
attack: a point of the box may lie outside the ball), and a leaf's LP runs over the box cut by
half-spaces that contain the ball (_ball_cut): it may refute a leaf, never find one violated.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from ..bounds.backward import crown_intermediate
from ..bounds.ball import Ball, ball_for, ball_lower
from ..bounds.rounding import lower, clean_bounds
from ..budget import memory_budget, working_memory
from ..incomplete import alpha_crown_lower, case_bytes, intermediate_elems, output_lower, row_coefficients
from ..spec import Cases, conjuncts_refuted, open_rows
from ..verdict import Result, Verdict
from .domains import (AdaptiveBatch, Progress, cat_bounds, cat_cases, nbytes, next_batch, take_bounds, violations,
                      weakest_open_bound)

INF = float("inf")


@dataclass
class Domains:
    cs: Cases
    splits: dict[str, Tensor]                   # act name -> (N, *shape) int8 in {-1, 0, 1}
    pre: dict[str, tuple[Tensor, Tensor]] | None  # bounds inherited from the parent
    warm: dict | None = None  # the parent's optimised {"slopes": {...}, "betas": {...}}, (N, Q, *shape)
    fresh: Tensor | None = None  # (N,) index of the first activation whose inherited bounds are stale
    points: dict[str, Tensor] = field(default_factory=dict)  # act name -> (N, *shape) split points
    #                                                         (activations without a kink at 0 only)

    def __len__(self) -> int:
        return len(self.cs)

    def take(self, idx) -> "Domains":
        i = torch.as_tensor(np.asarray(idx, dtype=np.int64), device=self.cs.lo.device)
        return Domains(self.cs.select(idx), {k: v[i] for k, v in self.splits.items()}, take_bounds(self.pre, i),
                       _take_warm(self.warm, i), None if self.fresh is None else self.fresh[i],
                       {k: v[i] for k, v in self.points.items()})


def _take_warm(warm: dict | None, idx) -> dict | None:
    """The warm starts of the domains idx (indices, possibly repeated)."""
    return None if warm is None else {g: {k: v[idx] for k, v in part.items()} for g, part in warm.items()}


def _cat_warm(parts: list[Domains]) -> dict | None:
    """Warm starts of several batches stacked; a batch without some tensor gets zero betas for
    it (no split there yet) and loses its slopes' warm start (None when one lacks them)."""
    if any(p.warm is None for p in parts):
        return None
    slopes = {k: torch.cat([p.warm["slopes"][k] for p in parts]) for k in parts[0].warm["slopes"]
              if all(k in p.warm["slopes"] for p in parts)}
    names = set().union(*(p.warm["betas"] for p in parts))
    betas = {}
    for k in names:
        like = next(p.warm["betas"][k] for p in parts if k in p.warm["betas"])
        betas[k] = torch.cat([p.warm["betas"][k] if k in p.warm["betas"]
                              else like.new_zeros((len(p),) + like.shape[1:]) for p in parts])
    return {"slopes": slopes, "betas": betas}


def _join(parts: list[Domains]) -> Domains:
    if len(parts) == 1:
        return parts[0]
    splits = {k: torch.cat([p.splits[k] for p in parts]) for k in parts[0].splits}
    fresh = None if any(p.fresh is None for p in parts) else torch.cat([p.fresh for p in parts])
    points = {k: torch.cat([p.points[k] for p in parts]) for k in parts[0].points}
    return Domains(cat_cases([p.cs for p in parts]), splits, cat_bounds([p.pre for p in parts]), _cat_warm(parts),
                   fresh, points)


def _fit_memory(stack: list[Domains], budget: int) -> bool:
    """Keep the open domains within `budget` bytes by dropping the warm starts of the oldest
    batches first (their children start from the default slopes and zero multipliers again).
    False when even without any warm start they do not fit."""
    total = sum(nbytes(part) for part in stack)
    for part in stack:
        if total <= budget:
            break
        if part.warm is not None:
            total -= nbytes(part.warm)
            part.warm = None
    return total <= budget


def _clamps(d: Domains) -> dict:
    """Split decisions (and inherited bounds) as bounds on each activation's input; the inherited
    bounds of a product's other inputs ((node, k) keys) as they are."""
    out = {}
    for name, s in d.splits.items():
        p = d.points.get(name)
        at = torch.zeros((), dtype=d.cs.lo.dtype, device=d.cs.lo.device) if p is None else p.to(d.cs.lo.dtype)
        lo = torch.where(s > 0, at, -INF).to(d.cs.lo.dtype)
        hi = torch.where(s < 0, at, INF).to(d.cs.lo.dtype)
        if d.pre is not None:  # a NaN inherited bound is no bound (the decision still holds)
            plo, phi = clean_bounds(*d.pre[name])
            lo, hi = torch.maximum(lo, plo), torch.minimum(hi, phi)
        out[name] = (lo, hi)
    for key, b in (d.pre or {}).items():
        if not isinstance(key, str):
            out[key] = (b[0].clone(), b[1].clone())   # _intermediate writes into them
    return out


def _intermediate(q, d: Domains, memory: int | None = None, ball: Ball | None = None
                  ) -> dict[str, tuple[Tensor, Tensor]]:
    """Activation input bounds of each domain.  A child differs from its parent by one split, so
    only the activations from its `fresh` index on are recomputed (the earlier ones' bounds
    would come out the same); domains are grouped by that index.  ball: see the module."""
    cs, clamps = d.cs, _clamps(d)
    # half of memory for the batch's own bounds, half for the back-substitution's chunks
    elems = intermediate_elems(None if memory is None else memory // 2, cs.lo.element_size())
    if d.pre is None or d.fresh is None:
        return crown_intermediate(q.graph, cs.lo, cs.hi, fixed=clamps, deadline=q.deadline, budget_elems=elems,
                                  ball=ball_for(ball, cs.lo.shape[0]))
    names = list(d.splits)
    for first in sorted(set(d.fresh.tolist())):
        if first >= len(names):
            continue
        sel = (d.fresh == first).nonzero().flatten()
        part = crown_intermediate(q.graph, cs.lo[sel], cs.hi[sel], fixed=take_bounds(clamps, sel),
                                  deadline=q.deadline, first=first, budget_elems=elems,
                                  ball=ball_for(ball, len(sel)))
        for key, (plo, phi) in part.items():
            if not isinstance(key, str) or key in names[first:]:
                if key not in clamps:
                    clamps[key] = (cs.lo.new_full((len(cs),) + plo.shape[1:], -INF),
                                   cs.lo.new_full((len(cs),) + phi.shape[1:], INF))
                clamps[key][0][sel], clamps[key][1][sel] = plo, phi
    return clamps


def _bound(q, d: Domains, alpha_iters: int, memory: int, ball: Ball | None = None):
    """(lb (N, Q), activation input bounds, the optimised slopes and betas or None), the rows
    bounded in blocks within memory bytes.  ball: see the module."""
    cs = d.cs
    warm: dict = {}
    with torch.no_grad():
        pre = _intermediate(q, d, memory, ball)
        lb = output_lower(q.graph, cs, pre, memory, ball=ball_for(ball, len(cs)))
    if alpha_iters > 0:
        cfg = replace(q.cfg.alpha_cfg, iterations=alpha_iters)
        lb = torch.maximum(lb, alpha_crown_lower(q.graph, cs, pre, cfg, q.deadline, q.tol, memory, prior=lb,
                                                 signs=d.splits, warm=d.warm, keep=warm, points=d.points or None,
                                                 ball=ball_for(ball, len(cs))))
    return lb, pre, warm or None


def _branch(q, d: Domains, coeffs: dict, pre: dict):
    """(activation names, (N,) layer index into them, (N,) flat neuron index, (N,) split point)
    for each domain: the split with the largest estimated gain (ActivationRule.branch_gain) for
    its weakest open row, whose CROWN coefficients coeffs[name] (N, *shape) are; the layer index
    is -1 where no activation can be split any more."""
    from ..ops import RULES, side_boxes

    cs = d.cs
    N = len(cs)
    like = cs.d
    best_score = torch.full((N,), -1.0, dtype=like.dtype, device=like.device)
    best_layer = torch.full((N,), -1, dtype=torch.long, device=like.device)
    best_idx = torch.zeros(N, dtype=torch.long, device=like.device)
    best_point = torch.zeros(N, dtype=like.dtype, device=like.device)
    names = list(d.splits)
    rows = torch.arange(N, device=like.device)
    for li, name in enumerate(names):
        node = q.graph.by_name[name]
        if name not in coeffs:
            continue
        out = RULES[node.op].branch_gain(node, pre[name][0], pre[name][1], coeffs[name],
                                         *side_boxes(q.graph, node, pre))
        if out is None:
            continue
        gain, point = out[0].reshape(N, -1), out[1].reshape(N, -1)
        s, i = gain.max(-1)
        better = s > best_score
        best_score = torch.where(better, s, best_score)
        best_layer = torch.where(better, li, best_layer)
        best_idx = torch.where(better, i, best_idx)
        best_point = torch.where(better, point[rows, i].to(like.dtype), best_point)
    return names, best_layer, best_idx, best_point


def _children(d: Domains, pre: dict, names, layer: Tensor, idx: Tensor, point: Tensor) -> Domains:
    N = len(d)
    rows = torch.arange(N, device=layer.device)
    pos, neg = {}, {}
    points = {}
    for li, name in enumerate(names):
        s = d.splits[name].reshape(N, -1)
        sp, sn = s.clone(), s.clone()
        hit = rows[layer == li]
        sp[hit, idx[hit]] = 1
        sn[hit, idx[hit]] = -1
        shape = d.splits[name].shape
        pos[name], neg[name] = sp.reshape(shape), sn.reshape(shape)
        if name in d.points:
            p = d.points[name].reshape(N, -1).clone()
            p[hit, idx[hit]] = point[hit].to(p.dtype)
            points[name] = p.reshape(shape).repeat((2,) + (1,) * (len(shape) - 1))
    parent = torch.cat([rows, rows])
    splits = {k: torch.cat([pos[k], neg[k]]) for k in names}
    inherited = take_bounds(pre, parent)
    fresh = (layer + 1).repeat(2)
    return Domains(d.cs.with_box(d.cs.lo[parent], d.cs.hi[parent], parent), splits, inherited,
                   _take_warm(d.warm, parent), fresh, points)


def _affine_forms(q, leaf: Domains, pre: dict, value: str, C: Tensor, d: Tensor | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Linear lower bounds of sum(C * value) (+ d) on the leaf's domain: (A (k, n), e (k,)) with
    sum(C * value(x)) + d >= A x + e there, the rounding of the back-substitution (and of + d)
    already subtracted from e.  On a leaf all relaxations are exact, so these are the affine
    forms themselves up to that rounding."""
    from ..bounds.backward import Relaxation, backward_linear, magnitudes

    cs = leaf.cs
    with torch.no_grad():
        relax = Relaxation(pre, mags=magnitudes(q.graph, cs.lo, cs.hi, pre, upto=value))
        A, const, err = backward_linear(q.graph, value, C, relax)
        e = lower(const, err) if d is None else lower(lower(const, err) + d)
    k = C.shape[1]
    A = np.zeros((k, cs.lo[0].numel())) if A is None else A[0].reshape(k, -1).cpu().double().numpy()
    return A, e[0].cpu().double().numpy()


LEAF_BALL_CUTS = 64   # half-spaces around the ball added to a leaf's LP, one per minimiser outside it


def _settle_leaf(q, leaf: Domains, pre: dict, ball: Ball | None = None):
    """Decide one fully split domain exactly: True (refuted), a SAT Result, or False (open).
    ball: the LP minimises over the box cut by half-spaces that contain the ball (_ball_cut), one
    more each time its minimiser lies outside the ball; its point is never a counterexample."""
    from ..lp.leaf import leaf_bound
    from ..pipeline import try_confirm

    cs = leaf.cs
    G_split, g_split = [], []
    for name, sgn in leaf.splits.items():
        flat = sgn.reshape(-1)
        j = (flat != 0).nonzero().flatten()
        if j.numel() == 0:
            continue
        value = q.graph.by_name[name].inputs[0]
        # rows -s_j p_j(x), which are <= 0 wherever the decisions hold
        C = torch.zeros((1, j.numel()) + tuple(sgn.shape[1:]), dtype=cs.lo.dtype, device=cs.lo.device)
        C.reshape(1, j.numel(), -1)[0, torch.arange(j.numel()), j] = -flat[j].to(cs.lo.dtype)
        a, b = _affine_forms(q, leaf, pre, value, C)
        G_split.append(a)
        g_split.append(b)
    rows_A, rows_e = _affine_forms(q, leaf, pre, q.graph.output_name,
                                   cs.C.reshape((1, cs.C.shape[1]) + q.graph.output_shape), cs.d)
    lo, hi = cs.lo[0].reshape(-1).cpu().numpy(), cs.hi[0].reshape(-1).cpu().numpy()
    conj, valid = cs.conj[0].cpu().numpy(), cs.valid[0].cpu().numpy()
    for j in np.nonzero(valid)[0]:
        G = np.vstack([rows_A[conj == j]] + G_split)
        g = np.concatenate([rows_e[conj == j]] + g_split)
        bound, x = leaf_bound(G, g, lo, hi)
        for _ in range(LEAF_BALL_CUTS if ball is not None else 0):
            cut = None if bound > q.tol or x is None else _ball_cut(x, ball)
            if cut is None:
                break
            q.deadline.check()
            G, g = np.vstack([G, cut[0]]), np.concatenate([g, cut[1]])
            bound, x = leaf_bound(G, g, lo, hi)
        if bound > q.tol:
            continue
        if x is not None and ball is None:
            xt = torch.as_tensor(x, dtype=cs.lo.dtype, device=cs.lo.device).reshape((1,) + tuple(cs.lo.shape[1:]))
            found = try_confirm(q, cs, xt, violations(q.graph, cs, xt))
            if found is not None:
                return found
        return False
    return True


def _ball_cut(x: np.ndarray, ball: Ball) -> tuple[np.ndarray, np.ndarray] | None:
    """A half-space a . y + e <= 0 that holds on the whole ball and cuts off the point x (n,), as
    a leaf LP row (a (1, n), e (1,)); None when x lies in the ball (up to 1e-9 relative).
    a = (x - centre) / |x - centre|; e is ball_lower's rigorous lower bound of min over the ball
    of -a . y (= -max of a . y), so a . y + e <= 0 for every y of the ball, whatever a is."""
    c = ball[0].reshape(-1).double().cpu()
    r = ball[1].reshape(-1)[:1].double().cpu()
    a = torch.as_tensor(x, dtype=torch.float64) - c
    dist = float(a.norm())
    if not np.isfinite(dist) or dist <= float(r) * (1 + 1e-9):
        return None
    a = a / dist
    e = ball_lower(-a.reshape(1, 1, -1), a.new_zeros(1, 1), a.new_zeros(1, 1), (c.reshape(1, -1), r))
    if not bool(torch.isfinite(e).all()):
        return None
    return a.reshape(1, -1).numpy(), e.reshape(1).numpy()


def _settle_leaves(q, leaves: Domains, pre: dict, idx: np.ndarray, ball: Ball | None = None):
    """Domains with every unstable neuron decided: the network is affine there, and one LP per
    conjunct decides them.  True when every leaf is refuted, a SAT Result if one holds a
    confirmed counterexample, False otherwise."""
    q.stats["lp_leaves"] = q.stats.get("lp_leaves", 0) + len(idx)
    for i, k in enumerate(idx):
        leaf = leaves.take([i])
        pre_l = take_bounds(pre, slice(k, k + 1))
        out = _settle_leaf(q, leaf, pre_l, ball)
        if out is not True:
            return out
        q.deadline.check()
    return True


class Exhausted(Exception):
    """Splitting the activations cannot make progress on some open domain (every activation
    there is too narrow to split and not all are kinks, so no LP can settle it); the caller may
    go on another way (input splitting)."""


def activation_split_bab(q, cases: Cases, pre: dict | None = None, ball: Ball | None = None) -> Result:
    """UNSAT once every domain is refuted; SAT with a confirmed counterexample (never with a
    ball); UNKNOWN at the domain or memory cap; raises OutOfTime at the deadline and Exhausted
    when splitting cannot go on.  pre: bounds known for the cases (valid on the ball, with one);
    ball: centre (1, *input_shape), radius (1,) at or above the exact one: every bound is taken
    over each box intersected with it (see the module)."""
    from ..bounds.backward import activation_inputs
    from ..ops import RULES
    from ..pipeline import stage_attack, try_confirm

    cfg = q.cfg.bab
    acts = activation_inputs(q.graph)
    dev = cases.lo.device
    if not any(RULES[n.op].can_split(n) for n in acts):
        raise Exhausted("no nonlinearity of the network can be split")
    # every nonlinearity a kink at 0: a domain with all of them decided is affine (an LP decides it)
    kinks_only = all(RULES[n.op].splittable for n in acts)
    splits = {n.name: torch.zeros((len(cases),) + n.shape, dtype=torch.int8, device=dev) for n in acts}
    points = {n.name: torch.zeros((len(cases),) + n.shape, dtype=cases.lo.dtype, device=dev)
              for n in acts if not RULES[n.op].splittable}
    # the root recomputes every layer once (on the pipeline's bounds, CROWN and the interval pass
    # can still tighten later layers); its children then only the layers after their split
    root_fresh = None if pre is None else torch.zeros(len(cases), dtype=torch.long, device=dev)
    stack = [Domains(cases, splits, pre, None, root_fresh, points)]
    rounds, domains = 0, 0
    progress = Progress()
    size = AdaptiveBatch(16, cfg.batch)
    budget = memory_budget(cases.lo.device, cfg.memory_mb)
    work = working_memory(budget)
    size.cap = min(size.cap, max(1, work // (2 * case_bytes(q.graph, cases.lo.element_size()))))
    size.size = min(size.size, size.cap)
    while stack:
        batch, stack = next_batch(q, stack, size.size, _join)
        if batch is None:
            return Result(Verdict.UNKNOWN, reason="too many open domains")
        t0 = time.monotonic()
        lb, pre, warm = _bound(q, batch, q.cfg.bab_alpha_iterations, work, ball)
        size.update(len(batch), time.monotonic() - t0)
        cs = batch.cs
        valid = cs.valid & ~conjuncts_refuted(cs, lb, q.tol)
        open_ = valid.any(-1)
        rounds += 1
        domains += len(cs)
        if not bool(open_.any()):
            continue
        idx = open_.nonzero().flatten().cpu().numpy()
        kept = Domains(replace(cs, valid=valid), batch.splits, None, warm, batch.fresh, batch.points).take(idx)
        lb_k = lb[idx]
        pre_k = take_bounds(pre, idx)
        # the weakest open row of each domain: its CROWN coefficients choose the split, and the
        # box corner that minimises its linear bound is a cheap, often excellent candidate
        coeffs = row_coefficients(q.graph, kept.cs, pre_k, torch.where(open_rows(kept.cs), lb_k, INF).argmin(-1))
        if ball is None:   # a corner of the box may lie outside the ball: no candidate then
            x = torch.where(coeffs[q.graph.input_name] > 0, kept.cs.lo, kept.cs.hi)
            found = try_confirm(q, kept.cs, x, violations(q.graph, kept.cs, x))
            if found is not None:
                return found
        names, layer, neuron, point = _branch(q, kept, coeffs, pre_k)
        leaf = (layer < 0).cpu().numpy()
        if leaf.any() and not kinks_only:
            raise Exhausted("an open domain has no activation left worth splitting")
        if leaf.any():
            settled = _settle_leaves(q, kept.take(np.nonzero(leaf)[0]), pre_k, np.nonzero(leaf)[0], ball)
            if isinstance(settled, Result):
                return settled
            if not settled:
                return Result(Verdict.UNKNOWN, reason="a fully split domain holds an LP solution that "
                              + ("onnxruntime does not confirm" if ball is None else "no cut off the ball removes"))
            inner = np.nonzero(~leaf)[0]
            if inner.size == 0:
                continue
            kept, lb_k = kept.take(inner), lb_k[inner]
            pre_k = take_bounds(pre_k, inner)
            layer, neuron, point = layer[inner], neuron[inner], point[inner]
        stack.append(_children(kept, pre_k, names, layer, neuron, point))
        if not _fit_memory(stack, budget - work):
            return Result(Verdict.UNKNOWN, reason="the open domains outgrow the memory budget")
        progress.maybe("activation BaB: %d open domains after %d rounds (%d bounded, %d LP leaves), worst bound %.4g",
                       sum(len(s) for s in stack), rounds, domains, q.stats.get("lp_leaves", 0),
                       float(weakest_open_bound(kept.cs, lb_k).min()))
        if rounds % 20 == 0 and ball is None:
            found = stage_attack(q, cases, round_=rounds)  # a fresh random stream each time
            if found is not None:
                return found
    q.stats.update(bab_rounds=rounds, bab_domains=domains)
    return Result(Verdict.UNSAT)
