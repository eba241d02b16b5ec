"""Searching for counterexamples: random sampling, then PGD with restarts, on the IR in torch.

The attack only proposes candidates; confirm.confirm_sat decides.
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch
from torch import Tensor

from .budget import Deadline, fitting
from .config import AttackConfig
from .evaluate import forward
from .ir import Graph
from .spec import Cases, violation, violation_point_bytes


def _objective(graph: Graph, sp: Cases, x: Tensor, memory: int | None = None) -> Tensor:
    """x: (P, R, *in) -> violation (P, R); <= 0 means a candidate counterexample."""
    P, R = x.shape[:2]
    y = forward(graph, x.reshape((P * R,) + x.shape[2:])).reshape(P, R, -1)
    return violation(sp, y, memory)


def _value_and_grad(graph: Graph, sp: Cases, x: Tensor, memory: int | None) -> tuple[Tensor, Tensor]:
    """The violation at x (P, R, *in) and its gradient with respect to x, a few points at a time
    (each point's violation depends on that point only): ((P, R), (P, R, *in))."""
    R = x.shape[1]
    step = fitting(R, violation_point_bytes(sp, x.element_size(), grad=True), memory)
    vs, gs = [], []
    for s in range(0, R, step):
        xc = x[:, s:s + step].detach().requires_grad_(True)
        with torch.enable_grad():
            v = _objective(graph, sp, xc, memory)
            (g,) = torch.autograd.grad(v.sum(), xc)
        vs.append(v.detach())
        gs.append(g)
    return torch.cat(vs, 1), torch.cat(gs, 1)


def _chunks(P: int, R: int, in_size: int, cfg: AttackConfig) -> int:
    return max(1, min(P, cfg.max_points // max(1, R * max(1, in_size // 64))))


def attack(graph: Graph, sp: Cases, deadline: Deadline, cfg: AttackConfig = AttackConfig(),
           generator: torch.Generator | None = None, memory: int | None = None) -> tuple[Tensor, Tensor]:
    """Best point found per subproblem and its violation: ((P, *in), (P,)).  memory: bytes the
    working tensors may take (the violations of many points over many rows are taken a few
    points at a time)."""
    P = len(sp)
    in_size = sp.lo[0].numel() if P else 0
    low_dim = 0 < in_size <= cfg.search_max_dim and cfg.search_steps > 0
    if P and not low_dim and sp.valid.shape[1] > 1 and 0 < int(sp.valid.sum()) <= cfg.per_conjunct_max:
        return _per_conjunct(graph, sp, deadline, cfg, generator, memory)
    if P:   # a point's forward pass keeps every value (autograd as much again): no more points than fit
        per_point = (3 * sum(n.size for n in graph.nodes) + graph.input_size) * sp.lo.element_size()
        cfg = replace(cfg, max_points=min(cfg.max_points, fitting(cfg.max_points, per_point, memory, "a point")))
        samples = max(1, min(cfg.samples, cfg.budget_points // P))
        cfg = replace(cfg, samples=samples, restarts=max(1, min(cfg.restarts, samples)))
    best_x, best_v = sp.lo.clone(), torch.full((P,), float("inf"), dtype=sp.lo.dtype, device=sp.lo.device)
    search = (0, 0, 0)  # samples, elites, children per case
    if low_dim:  # the search's points per case and step stay within budget_points over all cases
        per_case = max(1, cfg.budget_points // max(1, P))
        elites = max(1, min(cfg.search_elites, per_case // cfg.search_children))
        children = max(1, min(cfg.search_children, per_case // elites))
        search = (max(elites, min(cfg.search_samples, per_case)), elites, children)
    step = _chunks(P, max(cfg.samples, cfg.restarts, search[1] * search[2]), in_size, cfg)
    for s in range(0, P, step):
        if deadline.expired():
            break
        part = sp.select(range(s, min(P, s + step)))
        x, v = _attack_part(graph, part, deadline, cfg, generator, memory)
        if low_dim and not bool((v <= 0).all()):
            xs, vs = _search_part(graph, part, deadline, cfg, *search, generator, memory)
            better = vs < v
            x = torch.where(better.reshape((-1,) + (1,) * (x.dim() - 1)), xs, x)
            v = torch.minimum(vs, v)
        best_x[s:s + len(part)], best_v[s:s + len(part)] = x, v
    return best_x, best_v


def _per_conjunct(graph: Graph, sp: Cases, deadline: Deadline, cfg: AttackConfig,
                  generator: torch.Generator | None, memory: int | None) -> tuple[Tensor, Tensor]:
    """attack() with one subproblem per (case, valid conjunct); per case, the point of its best
    subproblem and the case's own violation there."""
    P = len(sp)
    sub, owner = conjunct_cases(sp)
    xs, vs = attack(graph, sub, deadline, replace(cfg, per_conjunct_max=0), generator, memory)
    best = torch.full((P,), float("inf"), dtype=vs.dtype, device=vs.device).scatter_reduce(0, owner, vs, "amin")
    pick = torch.full((P,), -1, dtype=torch.long, device=vs.device)
    hit = vs <= best[owner]
    pick.scatter_(0, owner[hit], hit.nonzero().flatten())
    found = (pick >= 0).reshape((P,) + (1,) * (sp.lo.dim() - 1))
    x = torch.where(found, xs[pick.clamp(min=0)], sp.lo)
    with torch.no_grad():
        v = _objective(graph, sp, x.unsqueeze(1), memory)[:, 0]
    return x, v


def conjunct_cases(sp: Cases) -> tuple[Cases, Tensor]:
    """One case per (case, valid conjunct), holding that conjunct's rows only (padded to the
    largest conjunct's row count), and the case each comes from: (Cases, (S,) owner)."""
    owner, j = sp.valid.nonzero(as_tuple=True)
    S, dev = owner.numel(), sp.conj.device
    index = torch.full(sp.valid.shape, -1, dtype=torch.long, device=dev)
    index[owner, j] = torch.arange(S, device=dev)
    k, r = (sp.conj >= 0).nonzero(as_tuple=True)
    s = index[k, sp.conj[k, r]]
    k, r, s = k[s >= 0], r[s >= 0], s[s >= 0]
    order = torch.argsort(s, stable=True)
    k, r, s = k[order], r[order], s[order]
    count = torch.bincount(s, minlength=S)
    pos = torch.arange(s.numel(), device=dev) - (torch.cumsum(count, 0) - count)[s]
    Q = max(1, int(count.max()) if S else 1)
    C = sp.C.new_zeros((S, Q, sp.C.shape[2]))
    d = sp.d.new_zeros((S, Q))
    conj = torch.full((S, Q), -1, dtype=torch.long, device=dev)
    C[s, pos], d[s, pos], conj[s, pos] = sp.C[k, r], sp.d[k, r], 0
    strict = None
    if sp.strict is not None:
        strict = torch.zeros((S, Q), dtype=torch.bool, device=dev)
        strict[s, pos] = sp.strict[k, r]
    sub = Cases(sp.lo[owner], sp.hi[owner], C, d, conj, torch.ones((S, 1), dtype=torch.bool, device=dev),
                sp.case[owner.cpu().numpy()], strict)
    return sub, owner


def _values(graph: Graph, sp: Cases, pts: Tensor, max_points: int, memory: int | None = None) -> Tensor:
    """_objective over (P, N, *in) in slices of at most max_points points; no gradient."""
    P, N = pts.shape[:2]
    step = max(1, max_points // max(1, P))
    with torch.no_grad():
        return torch.cat([_objective(graph, sp, pts[:, i:i + step], memory) for i in range(0, N, step)], dim=1)


def _select(pts: Tensor, v: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k lowest-violation points per subproblem, best first: (P, k, *in), (P, k)."""
    vals, idx = v.topk(k, dim=1, largest=False, sorted=True)
    idx = idx.reshape(idx.shape + (1,) * (pts.dim() - 2)).expand(idx.shape + pts.shape[2:])
    return torch.gather(pts, 1, idx), vals


def _search_part(graph: Graph, sp: Cases, deadline: Deadline, cfg: AttackConfig, samples: int, E: int,
                 L: int, generator: torch.Generator | None, memory: int | None = None) -> tuple[Tensor, Tensor]:
    """Gradient-free search for low-dimensional inputs: uniform samples, half of them with some
    coordinates snapped to a face of the box (counterexamples often lie there), then elites that
    breed Gaussian children with a shrinking radius.  ((P, *in), (P,))."""
    lo, hi = sp.lo.unsqueeze(1), sp.hi.unsqueeze(1)
    P, shape = lo.shape[0], tuple(lo.shape[2:])
    width = hi - lo
    rand = lambda *size: torch.rand(size, dtype=lo.dtype, device=lo.device, generator=generator)
    u = rand(P, samples, *shape)
    on_face = (rand(P, samples, *shape) < 0.25) & (torch.arange(samples, device=lo.device) >= samples // 2
                                                   ).reshape((1, samples) + (1,) * len(shape))
    u = torch.where(on_face, (rand(P, samples, *shape) < 0.5).to(lo.dtype), u)
    pts = lo + width * u
    # the search is cheap on small networks and must stay so on larger ones: sampling stops at
    # half the time budget, and the steps get what is left at the measured cost per point
    t0 = time.monotonic()
    # a chunk's cost grows with its points times the rows: no more points than one pass's memory holds
    chunk = min(max(1, min(cfg.max_points, 8192) // P),
                fitting(samples, violation_point_bytes(sp, lo.element_size()), memory))
    vals = []
    for i in range(0, samples, chunk):
        vals.append(_values(graph, sp, pts[:, i:i + chunk], cfg.max_points, memory))
        if time.monotonic() - t0 > cfg.search_seconds / 2 or deadline.expired():
            break
    v = torch.cat(vals, 1)
    elites, ev = _select(pts[:, :v.shape[1]], v, min(E, v.shape[1]))
    E = elites.shape[1]
    spent = time.monotonic() - t0
    per_point = spent / (P * v.shape[1])
    steps = min(cfg.search_steps, int(max(0.0, cfg.search_seconds - spent) / max(per_point * P * E * L, 1e-9)))
    for it in range(steps):
        if deadline.expired() or bool((ev[:, 0] <= 0).all()):
            break
        radius = 0.1 * (1e-3 ** (it / max(1, steps - 1)))
        noise = torch.randn((P, E * L) + shape, dtype=lo.dtype, device=lo.device, generator=generator)
        kids = elites.repeat_interleave(L, dim=1) + radius * width * noise
        kids = torch.minimum(torch.maximum(kids, lo), hi)
        elites, ev = _select(torch.cat([elites, kids], 1),
                             torch.cat([ev, _values(graph, sp, kids, cfg.max_points, memory)], 1), E)
    return elites[:, 0], ev[:, 0]


def _attack_part(graph: Graph, sp: Cases, deadline: Deadline, cfg: AttackConfig,
                 generator: torch.Generator | None, memory: int | None = None) -> tuple[Tensor, Tensor]:
    lo, hi = sp.lo.unsqueeze(1), sp.hi.unsqueeze(1)
    P = lo.shape[0]
    width = hi - lo
    u = torch.rand((P, cfg.samples) + tuple(lo.shape[2:]), dtype=lo.dtype, device=lo.device, generator=generator)
    pts = torch.cat([(lo + hi) / 2, lo + width * u], dim=1)
    with torch.no_grad():
        v = _objective(graph, sp, pts, memory)
    order = v.argsort(dim=1)[:, :cfg.restarts]
    x = torch.gather(pts, 1, order.reshape(order.shape + (1,) * (pts.dim() - 2)).expand((P, order.shape[1]) + pts.shape[2:]))
    best_x, best_v = pts[torch.arange(P), order[:, 0]], v[torch.arange(P), order[:, 0]]
    for it in range(cfg.steps):
        if deadline.expired() or bool((best_v <= 0).all()):
            break
        x = x.detach()
        vx, g = _value_and_grad(graph, sp, x, memory)
        with torch.no_grad():
            better = vx.min(1)
            improve = better.values < best_v
            best_v = torch.where(improve, better.values, best_v)
            cand = x[torch.arange(P), better.indices]
            best_x = torch.where(improve.reshape((P,) + (1,) * (cand.dim() - 1)), cand, best_x)
            # geometric decay from step_frac to step_frac / 1000 of the width: the first steps
            # cross the box, the last ones settle into thin violating regions
            eta = cfg.step_frac * (1e-3 ** (it / max(1, cfg.steps - 1)))
            x = torch.minimum(torch.maximum(x - eta * width * g.sign(), lo), hi)
    with torch.no_grad():
        vx = _objective(graph, sp, x, memory)
        better = vx.min(1)
        improve = better.values < best_v
        best_v = torch.where(improve, better.values, best_v)
        cand = x[torch.arange(P), better.indices]
        best_x = torch.where(improve.reshape((P,) + (1,) * (cand.dim() - 1)), cand, best_x)
    return best_x.detach(), best_v.detach()
