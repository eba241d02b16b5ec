"""The graph IR the engine works on: a DAG of nodes in topological order.

Every value carries a leading batch dimension B that the IR never mixes; shapes stored here
exclude it.  Nodes are frozen: per-query results (bounds, slopes) travel in dicts keyed by
node name, never on the nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch


@dataclass(frozen=True, eq=False)
class Node:
    """One operation.  name: the value it produces; op: key into the rule registry;
    inputs: names of the variable values it reads (constants live in params)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    params: Mapping[str, Any]
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True, eq=False)
class Graph:
    """input_name / input_shape: the network input (shape without batch).
    onnx_input_shape: the input shape as the ONNX model wants it (batch dim 1 included if the
    model has one).  nodes: topological order; output_name: the value the property reads."""

    input_name: str
    input_shape: tuple[int, ...]
    nodes: tuple[Node, ...]
    output_name: str
    onnx_input_shape: tuple[int, ...]
    onnx_output_shape: tuple[int, ...] = ()
    by_name: Mapping[str, Node] = field(default_factory=dict)
    # the function bounded: None for the network over the reals; a dtype for the network as
    # onnxruntime computes it in that type (bounds/rounding.py: model error terms)
    float_model: torch.dtype | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {n.name: n for n in self.nodes})

    @property
    def input_size(self) -> int:
        n = 1
        for d in self.input_shape:
            n *= d
        return n

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shape_of(self.output_name)

    @property
    def output_size(self) -> int:
        n = 1
        for d in self.output_shape:
            n *= d
        return n

    def shape_of(self, name: str) -> tuple[int, ...]:
        return self.input_shape if name == self.input_name else self.by_name[name].shape

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {self.input_name: []}
        for n in self.nodes:
            out.setdefault(n.name, [])
            for i in n.inputs:
                out.setdefault(i, []).append(n)
        return out

    def holds_exactly_in(self, dtype: torch.dtype) -> bool:
        """Whether every constant of the graph (tensors and numbers in params) is a value of
        dtype: only then may the graph be computed in dtype (a float64 model's weights rounded to
        float32 would be another function)."""
        def exact(v: Any) -> bool:
            if isinstance(v, torch.Tensor):
                return not v.is_floating_point() or bool((v.to(dtype).to(v.dtype) == v).all())
            if isinstance(v, float):
                return float(torch.tensor(v, dtype=dtype)) == v
            if isinstance(v, (list, tuple)):
                return all(exact(p) for p in v)
            return True
        return all(exact(v) for n in self.nodes for v in n.params.values())

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "Graph":
        """A copy whose tensor parameters live on device in dtype."""
        def move(v: Any) -> Any:
            if isinstance(v, torch.Tensor):
                return v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
            return v
        nodes = tuple(Node(n.name, n.op, n.inputs, {k: move(v) for k, v in n.params.items()}, n.shape)
                      for n in self.nodes)
        return Graph(self.input_name, self.input_shape, nodes, self.output_name,
                     self.onnx_input_shape, self.onnx_output_shape, float_model=self.float_model)
