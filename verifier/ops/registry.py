"""The two registries that hold all operator knowledge.

RULES maps an internal op name to one object holding every rule of that op (concrete
evaluation, interval bounds, linear maps or relaxations).  CONVERTERS maps an ONNX op type to
the function that turns an ONNX node into internal nodes.  Propagators (interval, backward,
alpha, attack) only ever call methods on RULES entries; they never test op names.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..bounds.rounding import clean_bounds
from ..ir import Node

class Registry(dict):
    """A registry whose entries are registered when their module is first needed: `where` maps
    each name to the module that declares it (verifier/ops/__init__.py reads it off the
    modules' decorators), and looking a name up, or asking whether it is there, imports that
    module.  Listing the registry (iterating it, its keys, items, values or length) imports
    every module first.  A start on a small network imports a third of the operator modules."""

    def __init__(self) -> None:
        super().__init__()
        self.where: dict[str, str] = {}
        self.load: Callable[[str | None], None] | None = None   # import one module (None: all)

    def registered(self, name: str) -> bool:
        return dict.__contains__(self, name)

    def __missing__(self, name: str):
        if self.load is not None and name in self.where:
            self.load(self.where[name])
            if self.registered(name):
                return dict.__getitem__(self, name)
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return self.registered(name) or name in self.where

    def get(self, name, default=None):
        return self[name] if name in self else default

    def _everything(self) -> None:
        if self.load is not None:
            self.load(None)

    def __iter__(self):
        self._everything()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._everything()
        return dict.__len__(self)

    def keys(self):
        self._everything()
        return dict.keys(self)

    def items(self):
        self._everything()
        return dict.items(self)

    def values(self):
        self._everything()
        return dict.values(self)


RULES: Registry = Registry()        # internal op name -> OpRule
CONVERTERS: Registry = Registry()   # ONNX op type -> converter function


def rule(*ops: str):
    """Class decorator registering one instance of the class under each internal op name."""
    def add(cls):
        for op in ops:
            assert not RULES.registered(op), f"duplicate rule for {op}"
            RULES[op] = cls()
        return cls
    return add


def converts(*onnx_types: str):
    """Function decorator registering an ONNX importer for each ONNX op type."""
    def add(fn):
        for t in onnx_types:
            assert not CONVERTERS.registered(t), f"duplicate converter for {t}"
            CONVERTERS[t] = fn
        return fn
    return add


class OpRule:
    """Base of every op's rules.  xs / A tensors carry a leading batch dimension."""

    linear = False

    def evaluate(self, node: Node, *xs: Tensor) -> Tensor:
        raise NotImplementedError


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


class LinearRule(OpRule):
    """An op affine in its variable inputs: f(x) = L(x) + bias.

    Subclasses implement evaluate and apply_abs; apply_t defaults to the vector-Jacobian product
    of the linear part, which is exact because the Jacobian does not depend on the point.
    """

    linear = True

    def bias(self, node: Node, like: Tensor, in_shapes: list[tuple[int, ...]]) -> Tensor | None:
        """f(0) as a tensor of the output shape (no batch dim), or None when it is zero.
        like: a tensor giving dtype and device."""
        zeros = [torch.zeros((1,) + tuple(s), dtype=like.dtype, device=like.device) for s in in_shapes]
        return self.evaluate(node, *zeros)[0]

    def apply(self, node: Node, *xs: Tensor) -> Tensor:
        """The linear part L(x)."""
        y = self.evaluate(node, *xs)
        b = self.bias(node, xs[0], [tuple(x.shape[1:]) for x in xs])
        return y if b is None else y - b

    def apply_abs(self, node: Node, *rads: Tensor) -> Tensor:
        """|L| applied to non-negative tensors (radii): an upper bound of |L(d)| for |d| <= r."""
        raise NotImplementedError

    def bias_magnitude(self, node: Node, like: Tensor, in_shapes: list[tuple[int, ...]]) -> Tensor | None:
        """A bound on the magnitudes of the constant terms that the model adds up to form the
        bias (output shape, no batch dim): |bias| unless the importer recorded a larger one
        (params["bias_abs"]: BatchNormalization's beta - mean * scale is computed from terms
        that can be much larger than the result), or None when there is no bias."""
        if node.params.get("bias_abs") is not None:
            return node.params["bias_abs"].to(like.dtype).expand(node.shape)
        b = self.bias(node, like, in_shapes)
        return None if b is None else b.abs()

    def is_exact(self, node: Node) -> bool:
        """True when every output element is a copy of one input element or a constant and no
        input element is copied twice (Reshape, Transpose, Slice, Concat, ...): then evaluate,
        apply, apply_abs and apply_t do no arithmetic at all, and the propagators charge no
        rounding for the node (onnxruntime's copies are exact too)."""
        return False

    def sum_terms(self, node: Node, in_shapes: list[tuple[int, ...]]) -> int:
        """An upper bound on the number of terms in any one float sum that evaluate, apply,
        apply_abs or apply_t computes (the bias counts as a term): the rounding error model
        (bounds/rounding.py) charges gamma(n) of the summed magnitudes per sum.  Sound default:
        every input element or every output element (whichever is more), plus one."""
        n_in = sum(_numel(s) for s in in_shapes)
        return max(n_in, _numel(node.shape)) + 1

    def apply_t(self, node: Node, A: Tensor, in_shapes: list[tuple[int, ...]]) -> list[Tensor]:
        """Transpose map: A (N, *out_shape) -> for each input, (N, *in_shape) with
        sum(A * L(x)) == sum over inputs of sum(A_i * x_i)."""
        n = A.shape[0]
        zeros = [torch.zeros((n,) + tuple(s), dtype=A.dtype, device=A.device) for s in in_shapes]
        _, vjp = torch.func.vjp(lambda *xs: self.apply(node, *xs), *zeros)
        return list(vjp(A))


class ActivationRule(OpRule):
    """An elementwise nonlinearity with sound interval and linear relaxation rules.

    Its planes are in its first input.  A rule with further inputs (a relational rule, say)
    receives their bounds after its own, as (lo, hi) pairs, in interval and relax (None where
    nothing is known of one: the relaxation must then hold for every value of it); its planes
    have no coefficient on them.

    splittable: the op is piecewise linear with one kink at 0, so fixing the sign of its input
    (a branch-and-bound split) makes it exactly linear.

    Branch and bound may split the input interval of any single-input activation at a point
    (branch_gain says where and how much it is worth); on each side the rule's relaxation,
    recomputed from the narrower bounds, is tighter."""

    splittable = False
    # True: relax_all gives planes in every input (a product of two variables, say); the
    # propagators then push the objective into each input
    multi_planes = False
    # the op of the rule bounding f(a + d) - f(a) as a function of d, with a as second input
    # (verifier/joint.py bounds the difference of two copies of a network with it), or None
    delta: str | None = None

    def interval(self, node: Node, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def relax(self, node: Node, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Planes (lw, lb, uw, ub), elementwise: lw*x+lb <= f(x) <= uw*x+ub for x in [lo, hi]."""
        raise NotImplementedError

    def relax_all(self, node: Node, *boxes) -> tuple[list[Tensor], Tensor, list[Tensor], Tensor]:
        """([lw_i], lb, [uw_i], ub), one slope per input (multi_planes rules): elementwise,
        sum_i lw_i x_i + lb <= f(x) <= sum_i uw_i x_i + ub on the boxes (lo, hi) of the inputs
        (None where unknown)."""
        raise NotImplementedError

    def slope_range(self, node: Node, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor] | None:
        """For a nondecreasing function: rigorous bounds (kmin, kmax), 0 <= kmin <= f' <= kmax, of
        its derivative over [lo, hi] (the difference rule of ops/relational.py uses them), or
        None when not known."""
        return None

    def model_error(self, node: Node, dtype: torch.dtype, *boxes) -> float | Tensor:
        """An absolute bound on how far onnxruntime's evaluation of the function in dtype may be
        from the real function (for float models), over the inputs' boxes ((lo, hi) each,
        (B, *shape), None where unknown): a float, or elementwise (B, *shape); inf when nothing
        is known."""
        return float("inf")

    def loose(self, node: Node, lo: Tensor, hi: Tensor) -> Tensor:
        """Elements whose relaxation on [lo, hi] is not exact: those whose input bounds are worth
        tightening (CROWN computes bounds only for them) and that a split may help.  Default:
        every interval of positive width, and for a kink at 0 (splittable) every interval
        across 0; a NaN bound counts as unknown, so as loose."""
        lo, hi = clean_bounds(lo, hi)
        return (lo < 0) & (hi > 0) if self.splittable else lo < hi

    def can_split(self, node: Node) -> bool:
        """Whether branch and bound may split this node's (first) input: a single-input function;
        a node with several variable inputs says so itself (a product does, on its first
        factor; a relational difference stays relaxed)."""
        return len(node.inputs) == 1 and not self.multi_planes

    def branch_gain(self, node: Node, lo: Tensor, hi: Tensor, a: Tensor, *side) -> tuple[Tensor, Tensor] | None:
        """For branch and bound: (gain, point), elementwise: an estimate of how much a lower bound
        whose coefficient on this node's output is `a` rises when the (first) input interval
        [lo, hi] is split at `point` (lo < point < hi); side: the other inputs' boxes (None
        where unknown), as in relax; -1 where the element should not be split; None when
        the op is never split (several inputs).  A kink at 0 is split there (kink_gain); else
        the point among a few candidates that
        leaves the least slack between f and the plane `a` selects, measured at sampled points
        (ops/split.py); a heuristic only, soundness rests on the relaxations of both sides."""
        if not self.can_split(node):
            return None
        from .split import kink_gain, sampled_gain

        return kink_gain(lo, hi, a) if self.splittable else sampled_gain(self, node, lo, hi, a)

    def lower_slope_range(self, node: Node, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor] | None:
        """Valid range of an optimisable parameter of the lower plane (alpha-CROWN: a slope for
        ReLU, a tangent point for Sigmoid), or None if not optimisable."""
        return None

    def lower_with_slope(self, node: Node, lo: Tensor, hi: Tensor, slope: Tensor) -> tuple[Tensor, Tensor]:
        """The lower plane for a given (clamped) parameter: (lw, lb); sound for every value in
        the range, and differentiable in it."""
        raise NotImplementedError

    def upper_slope_range(self, node: Node, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor] | None:
        """The same for the upper plane, or None (a convex function's chord is the best there is)."""
        return None

    def upper_with_slope(self, node: Node, lo: Tensor, hi: Tensor, slope: Tensor) -> tuple[Tensor, Tensor]:
        """The upper plane for a given (clamped) parameter: (uw, ub)."""
        raise NotImplementedError

    def slope_start(self, node: Node, lo: Tensor, hi: Tensor, upper: bool) -> Tensor:
        """Where alpha-CROWN starts the parameter: by default the slope of relax's plane (a rule
        with several inputs and an optimisable parameter overrides this: relax needs their boxes)."""
        return self.relax(node, lo, hi)[2 if upper else 0]


def side_boxes(graph, node: Node, pre) -> list:
    """Bounds of node's inputs after the first, for its relaxation: pre[(node, k)] for input k
    when computed for it (crown_intermediate does for multi_planes rules), else pre[act] of the
    activation whose first input it is, else None (unknown)."""
    if len(node.inputs) < 2:
        return []
    by_value = {graph.by_name[k].inputs[0]: v for k, v in pre.items() if isinstance(k, str) and k in graph.by_name}
    return [pre.get((node.name, k), by_value.get(v)) for k, v in enumerate(node.inputs) if k > 0]


def unsupported_ops(onnx_types) -> list[str]:
    return sorted({t for t in onnx_types if t not in CONVERTERS})
