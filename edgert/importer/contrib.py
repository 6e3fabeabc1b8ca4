"""onnxruntime's own operators (domain ``com.microsoft``), lowered to standard ONNX at import.

Models that went through onnxruntime's tools carry its contrib operators: the transformers
optimizer's fused forms (SkipLayerNormalization, BiasGelu, FastGelu, Attention...), the
quantizers' QOperator forms (QLinearAdd, QGemm...), 4-bit weights (MatMulNBits). Each is rewritten
here, by one rule per operator, into the standard operators it stands for, using the same
:class:`~edgert.importer.upgrade.Rewrite` helpers as the opset rules; the optimizer then fuses
them into edgert's own fused kernels where those exist (LayerNormalization, Gelu, the fused
elementwise chains, the int8 kernels), and every other part of edgert (the quantizer, the
CUDA path, the ONNX exporter) sees only standard operators.

A rule rewrites ``rw.node`` in place into a default-domain operator (setting ``node.op_type``,
its attributes and inputs), may insert further nodes before or after it, and returns the
default-domain opset version its output needs (e.g. 17 for LayerNormalization); ``rw.opset`` is
the model's default-domain opset. A rule that cannot express a node (an attribute combination
without a standard equivalent, a non-constant input it needs to be constant) raises
:class:`~edgert.importer.upgrade.Decline` with the reason.

Rules (``RULES``; more in :mod:`edgert.importer.contrib_quant` for the quantized forms):
"""

from __future__ import annotations

from edgert.importer.upgrade import Rule

RULES: dict[str, Rule] = {}
# Operators onnxruntime registers in the *default* domain although ONNX does not define them
# there (its transformers optimizer writes them so); lowered by the same rules.
DEFAULT_DOMAIN_OPS: frozenset[str] = frozenset()
