"""Opcodes of ``edgert.FusedElementwise`` programs (the optimizer writes them, the kernels run
them). An elementwise kernel class names its opcode in its traits
(:class:`edgert.runtime.registry.OpTraits`: ``fusion``)."""

# Binary ops read src1, src2; unary ops src1; CLIP reads x=src1, lo=src2, hi=src3.
OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MAX, OP_MIN = 0, 1, 2, 3, 4, 5
OP_RELU, OP_SIGMOID, OP_TANH, OP_EXP, OP_NEG, OP_ABS = 10, 11, 12, 13, 14, 15
OP_SQRT, OP_ERF, OP_RECIPROCAL = 16, 17, 18
OP_LEAKY_RELU, OP_HARD_SIGMOID, OP_HARD_SWISH = 19, 20, 21
OP_CLIP, OP_LOG = 22, 23

BINARY_OPCODES = frozenset({OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MAX, OP_MIN})
ALL_OPCODES = BINARY_OPCODES | {OP_RELU, OP_SIGMOID, OP_TANH, OP_EXP, OP_NEG, OP_ABS, OP_SQRT,
                                OP_ERF, OP_RECIPROCAL, OP_LEAKY_RELU, OP_HARD_SIGMOID,
                                OP_HARD_SWISH, OP_CLIP, OP_LOG}
