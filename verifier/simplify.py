"""Exact graph rewrites (exact over the reals) that make bound propagation cheaper.

An elementwise Affine right after a MatMul or Conv whose output feeds nothing else folds into
that node's weights: one node less to propagate through, and fewer rounding steps.  This is where
BatchNormalization after a convolution disappears.
"""
from __future__ import annotations

import torch

from .ir import Graph, Node


def _last_axis_vector(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """t as an (n,) vector if it broadcasts along the last axis only, else None."""
    if t is None:
        return None
    if t.numel() == 1:
        return t.reshape(1).expand(n).clone()
    if t.shape[-1] == n and t.numel() == n:
        return t.reshape(n)
    return None


def _channel_vector(t: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | None:
    """t as a (C,) vector if it is constant over everything but the channel axis."""
    if t is None:
        return None
    c = shape[0]
    if t.numel() == 1:
        return t.reshape(1).expand(c).clone()
    if t.numel() == c and t.dim() >= len(shape) and t.shape[t.dim() - len(shape)] == c:
        return t.reshape(c)
    return None


def _bias_terms(prev: Node, aff: Node, sv, vector) -> torch.Tensor | None:
    """Magnitudes of the constant terms the model adds into each output of the folded node:
    |s| (prev's bias terms) + (aff's shift terms), as a vector like the folded bias (see
    LinearRule.bias_magnitude); None when neither node has a bias."""
    b = prev.params.get("bias_abs", prev.params["b"])
    t = aff.params.get("bias_abs", aff.params["shift"])
    if b is None and t is None:
        return None
    out = 0
    if b is not None:
        out = b.abs().reshape(-1) * (1 if sv is None else sv.abs())
    if t is not None:
        out = out + vector(t.abs())
    return out


def _fold(prev: Node, aff: Node) -> Node | None:
    s, t = aff.params["scale"], aff.params["shift"]
    if prev.op == "MatMul" and aff.shape == prev.shape:
        n = prev.shape[-1]
        sv, tv = _last_axis_vector(s, n), _last_axis_vector(t, n)
        if (s is not None and sv is None) or (t is not None and tv is None):
            return None
        W, b = prev.params["W"], prev.params["b"]
        if sv is not None:
            W = W * sv
            b = None if b is None else b * sv
        terms = _bias_terms(prev, aff, sv, lambda v: _last_axis_vector(v, n))
        if tv is not None:
            b = tv if b is None else b + tv
        return Node(aff.name, "MatMul", prev.inputs, {"W": W, "b": b, "bias_abs": terms}, aff.shape)
    if prev.op == "Conv" and aff.shape == prev.shape and len(prev.shape) >= 2:
        sv, tv = _channel_vector(s, prev.shape), _channel_vector(t, prev.shape)
        if (s is not None and sv is None) or (t is not None and tv is None):
            return None
        p = dict(prev.params)
        W, b = p["W"], p["b"]
        if sv is not None:
            W = W * sv.reshape((-1,) + (1,) * (W.dim() - 1))
            b = None if b is None else b * sv
        terms = _bias_terms(prev, aff, sv, lambda v: _channel_vector(v, prev.shape))
        if tv is not None:
            b = tv if b is None else b + tv
        p["W"], p["b"] = W, b
        if terms is not None:      # (C,) -> (C, 1, ...): broadcasts onto the output like the bias
            p["bias_abs"] = terms.reshape((-1,) + (1,) * (len(prev.shape) - 1))
        return Node(aff.name, "Conv", prev.inputs, p, aff.shape)
    return None


def simplify(graph: Graph) -> Graph:
    """The graph with every foldable Affine merged into its producer."""
    nodes = list(graph.nodes)
    changed = True
    while changed:
        changed = False
        users: dict[str, int] = {}
        for n in nodes:
            for i in n.inputs:
                users[i] = users.get(i, 0) + 1
        by_name = {n.name: n for n in nodes}
        for k, aff in enumerate(nodes):
            if aff.op != "Affine" or aff.inputs[0] not in by_name:
                continue
            prev = by_name[aff.inputs[0]]
            if users.get(prev.name, 0) != 1 or prev.name == graph.output_name:
                continue
            merged = _fold(prev, aff)
            if merged is None:
                continue
            nodes = [n for n in nodes if n is not prev]
            nodes[nodes.index(aff)] = merged
            changed = True
            break
    return Graph(graph.input_name, graph.input_shape, tuple(nodes), graph.output_name,
                 graph.onnx_input_shape, graph.onnx_output_shape)
