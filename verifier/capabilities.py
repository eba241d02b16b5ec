"""What the solver supports, answered without importing torch (start-up time matters:
`supports` and `--version` are called once per query by tools that drive solvers)."""
from __future__ import annotations

ONNX_OPERATORS = (
    "Abs", "Add", "ArgMax", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Div", "Dropout", "Elu", "Equal", "Erf", "Exp", "Expand",
    "Flatten", "Floor", "Gather", "Gelu", "Gemm", "GlobalAveragePool", "Greater", "GreaterOrEqual", "HardSigmoid",
    "Identity", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "MatMul", "Max", "MaxPool",
    "Mean", "Min", "Mul", "Neg", "PRelu", "Pad", "Pow", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu",
    "Reshape", "Resize", "Shape", "Sigmoid", "Sign", "Sin", "Slice", "Softmax", "Softplus", "Softsign",
    "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "Transpose", "Unsqueeze", "Upsample", "Where",
)

CAPABILITIES: dict[str, tuple[str, ...]] = {
    # the first and the last opset: the importer refuses models outside them (onnx_import.OPSETS)
    "--onnx-opset-versions": ("7", "21"),
    # int64: an ArgMax result at a network output (verifier/argmax.py); integer and boolean
    # tensors inside the graph are computed too (ops/compare.py) but are never a model's input
    "--onnx-element-types": ("float32", "float64", "int64"),
    "--onnx-operators": ONNX_OPERATORS,
    "--vnnlib-versions": ("1.0", "2.0"),
    "--hidden-node-theories": ("NH", "H"),
    "--multiple-input-output-theories": ("SIO", "MIO"),
    "--multiple-network-theories": ("SNET", "MENET", "MINET", "MNET"),
    "--multiple-node-comparison-theories": ("SNC", "MNC"),
    "--arithmetic-complexity-theories": ("BND", "OUTC", "LIN"),
    "--optimised-disjunctive-reasoning": ("false",),
    "--serialise-assignments": ("true",),
    # ours, beyond the standard: what may follow the bounds (`verify --engine`); LP, MILP and SDP
    # through open solvers (HiGHS, Clarabel/SCS), every bound they give rebuilt and checked by us
    "--engines": ("bab", "milp", "sdp"),
}

# VNN-LIB element types the solver accepts in declarations, and the ONNX element type each needs
ELEMENT_TYPES = {"float32": 1, "float64": 11, "int64": 7, "real": None}
