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

# Registers an instruction reads: src1 (unary), src1 and src2 (binary), all three (CLIP). The
# unused source fields are still indexed by the kernels, so they must be in range too.
READS_3 = frozenset({OP_CLIP})


def reads(opcode: int) -> int:
    """How many of ``src1, src2, src3`` an instruction with ``opcode`` reads."""
    return 3 if opcode in READS_3 else 2 if opcode in BINARY_OPCODES else 1


def program_error(program, n_inputs: int) -> str | None:
    """What is wrong with a FusedElementwise program (rows ``[opcode, dst, src1, src2, src3]``)
    for ``n_inputs`` inputs, or None when it can run.

    Registers ``0..n_inputs-1`` hold the inputs and each instruction writes one more, so a
    register index must lie below ``n_inputs + len(program)``; an instruction may only read an
    input register or one an earlier instruction wrote (the kernels' registers start as
    uninitialized memory), and must not overwrite an input.
    """
    n_regs = n_inputs + len(program)
    written = set(range(n_inputs))
    for pc, row in enumerate(program):
        code, dst, *srcs = (int(v) for v in row)
        if code not in ALL_OPCODES:
            return f"instruction {pc}: unknown opcode {code}"
        for r in (dst, *srcs):
            if not 0 <= r < n_regs:
                return (f"instruction {pc}: register {r} is out of range [0, {n_regs}) "
                        f"({n_inputs} input(s) + one per instruction)")
        if dst < n_inputs:
            return f"instruction {pc}: writes input register {dst}"
        for r in srcs[: reads(code)]:
            if r not in written:
                return f"instruction {pc}: reads register {r} before any instruction writes it"
        written.add(dst)
    return None
