"""CPU kernels, one module per family, registered explicitly.

Each family module exposes ``register(reg)`` which adds its kernels to a
:class:`~edgert.runtime.registry.KernelRegistry`. Importing a module compiles nothing: Numba
kernels compile (or load from the on-disk cache) on first call.

Families are imported on demand: :data:`FAMILY_OPS` names the ops each family module registers,
and the registry imports a family (and runs its ``register``) the first time one of those ops is
looked up, so loading a ResNet imports the conv, pooling, elementwise, gemm... modules and not
the sequence, spectral or recurrent ones (start-up time; see ``benchmarks/load_time.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from edgert.runtime.registry import KernelRegistry

# family module (edgert/runtime/kernels/cpu/<name>.py) -> the ops its ``register`` adds, written
# "OpType" (default ONNX domain) or "domain.OpType". tests/test_startup.py checks that this is
# exactly what each module registers; an op missing here would still be found (a lookup that
# finds nothing imports every family), only later and slower.
FAMILY_OPS: dict[str, tuple[str, ...]] = {
    "conv": ("Conv", "ConvTranspose", "edgert.Conv", "edgert.ConvTranspose"),
    "gemm": ("Gemm", "MatMul", "edgert.Gemm", "edgert.MatMul"),
    "pooling": (
        "MaxUnpool", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
        "GlobalLpPool",
    ),
    "elementwise": (
        "Add", "Sub", "Mul", "Div", "Pow", "Mod", "PRelu", "BitShift", "BitwiseAnd", "BitwiseOr",
        "BitwiseXor", "And", "Or", "Xor", "Equal", "Less", "Greater", "LessOrEqual",
        "GreaterOrEqual", "Max", "Min", "Sum", "Mean", "Where", "Relu", "Tanh", "Softplus", "Exp",
        "Log", "Sqrt", "Reciprocal", "Abs", "Neg", "Sign", "Floor", "Ceil", "Round", "Sin", "Cos",
        "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Not",
        "BitwiseNot", "IsNaN", "IsInf", "Clip", "LeakyRelu", "Elu", "Selu", "Celu",
        "ThresholdedRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Softsign", "Mish", "Erf",
        "Gelu", "Shrink",
    ),
    "reduce": (
        "ReduceSum", "ReduceMean", "ReduceProd", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2",
        "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ArgMax", "ArgMin",
    ),
    "normalization": (
        "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
        "LRN", "LpNormalization", "MeanVarianceNormalization", "Softmax", "LogSoftmax", "Hardmax",
    ),
    "shape": (
        "Identity", "Dropout", "Shape", "Size", "ConstantOfShape", "Reshape", "Flatten", "Squeeze",
        "Unsqueeze", "Transpose", "Concat", "Split", "Slice", "Cast", "CastLike", "Range",
        "EyeLike",
    ),
    "movement": ("Expand", "Tile", "Pad", "Trilu", "CumSum", "DepthToSpace", "SpaceToDepth"),
    "indexing": (
        "Gather", "GatherElements", "GatherND", "ScatterElements", "ScatterND", "NonZero",
        "OneHot", "TopK",
    ),
    "resize": ("Resize",),
    "quantized": (
        "edgert.Quantize", "edgert.Dequantize", "edgert.QConv", "edgert.QGemm", "edgert.QAdd",
        "edgert.QMul", "edgert.QConcat", "edgert.QMaxPool", "edgert.QAveragePool",
        "edgert.QGlobalAveragePool", "edgert.QLut", "edgert.QSoftmax", "edgert.QConvTranspose",
    ),
    "fused": ("edgert.FusedElementwise",),
    "misc": (
        "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss", "RMSNormalization", "Swish",
        "CumProd", "Einsum", "Compress", "Unique", "HannWindow", "HammingWindow", "BlackmanWindow",
        "ReverseSequence", "BitCast", "StringNormalizer", "StringConcat", "RegexFullMatch",
        "SwiGLU",
    ),
    "control_flow": ("If", "Loop", "Scan"),
    "quantize_linear": (
        "ConvInteger", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
        "MatMulInteger", "QLinearMatMul", "edgert.MatMulIntegerToFloat",
    ),
    "attention": ("Attention", "RotaryEmbedding", "TensorScatter"),
    "recurrent": ("RNN", "GRU", "LSTM"),
    "shuffle": ("edgert.ChannelShuffle",),
    "sequence": (
        "SequenceEmpty", "SequenceConstruct", "SequenceInsert", "SequenceAt", "SequenceErase",
        "SequenceLength", "SplitToSequence", "ConcatFromSequence", "SequenceMap", "Optional",
        "OptionalHasElement", "OptionalGetElement",
    ),
    "sampling": ("GridSample", "AffineGrid", "RoiAlign", "CenterCropPad", "Col2Im", "DeformConv"),
    "detection": ("NonMaxSuppression",),
    "spectral": ("DFT", "STFT", "MelWeightMatrix"),
    "linalg": ("Det",),
    "ml": tuple(f"ai.onnx.ml.{op}" for op in (
        "ArrayFeatureExtractor", "Binarizer", "CastMap", "CategoryMapper", "DictVectorizer",
        "FeatureVectorizer", "Imputer", "LabelEncoder", "LinearClassifier", "LinearRegressor",
        "Normalizer", "OneHotEncoder", "SVMClassifier", "SVMRegressor", "Scaler", "ZipMap",
    )),
    "trees": tuple(f"ai.onnx.ml.{op}" for op in (
        "TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble",
    )),
}

_REGISTRY: KernelRegistry | None = None


def _register_family(name: str) -> Callable[[KernelRegistry], None]:
    """The function that imports family module ``name`` and runs its ``register``."""

    def register(reg: KernelRegistry) -> None:
        importlib.import_module(f"{__name__}.{name}").register(reg)

    return register


def registry() -> KernelRegistry:
    """The CPU kernel registry (built on first use; each family is imported on first lookup)."""
    global _REGISTRY
    if _REGISTRY is None:
        reg = KernelRegistry("cpu")
        for name, ops in FAMILY_OPS.items():
            reg.add_family(name, ops, _register_family(name))
        _REGISTRY = reg
    return _REGISTRY
