"""Concrete execution of the IR: the reference the bound algorithms are tested against."""
from __future__ import annotations

from torch import Tensor

from .ir import Graph
from .ops import RULES


def forward_all(graph: Graph, x: Tensor) -> dict[str, Tensor]:
    """Every value of the graph for inputs x (B, *graph.input_shape)."""
    values = {graph.input_name: x}
    for node in graph.nodes:
        values[node.name] = RULES[node.op].evaluate(node, *(values[i] for i in node.inputs))
    return values


def forward(graph: Graph, x: Tensor) -> Tensor:
    """Network output for inputs x (B, *graph.input_shape), as (B, *graph.output_shape)."""
    return forward_all(graph, x)[graph.output_name]
