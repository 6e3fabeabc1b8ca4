"""LLVM IR helpers shared by the kernels that emit their own vector code (qgemm, fgemm, dconv,
qdconv): array pointers, array type checks, and the ``MR x NR`` micro-tile emitter."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils

MR = 6  # rows of A (output channels) per micro-tile
NR = 16  # columns of B (output positions) per micro-tile: two vectors of 8 lanes


def data_ptr(context, builder, arrty, arr):
    return context.make_array(arrty)(context, builder, arr).data



def is_array(t, dtype, ndim: int) -> bool:
    return (isinstance(t, types.Array) and t.dtype == dtype and t.ndim == ndim
            and t.layout == "C")



def emit_tile(context, builder, signature, args, acc_t, b_t, step) -> None:
    """IR of an ``MR x NR`` micro-tile (the body of qgemm's ``_tile`` and fgemm's ``_ftile``).

    ``args`` are ``(a, a_off, b, b_off, offs, c_n, cstride, c)``; accumulators are ``2 * MR``
    vectors of type ``acc_t`` (8 lanes); each step loads two ``b_t`` vectors of ``B`` (one
    output row segment of 16), broadcasts each row's scalar of ``A`` (bitcast to ``b_t``: an
    int32 holds an int16 pair) and calls ``step(acc, a_vec, b_vec) -> acc``. Loops run over the
    taps in ``offs`` and, inside, over ``c_n`` steps ``cstride`` elements apart in ``B``.
    """
    a_arr, a_off_v, b_arr, b_off_v, offs_arr, c_v, cs_v, c_arr = args
    idx_t = a_off_v.type
    i32 = ir.IntType(32)
    zeros8 = ir.Constant(ir.VectorType(i32, 8), [0] * 8)
    half = b_t.count  # the second B vector follows the first

    def const(v):
        return ir.Constant(idx_t, v)

    ap0 = builder.gep(data_ptr(context, builder, signature.args[0], a_arr), [a_off_v])
    bp0 = builder.gep(data_ptr(context, builder, signature.args[2], b_arr), [b_off_v])
    op = data_ptr(context, builder, signature.args[4], offs_arr)
    n_taps = context.make_array(signature.args[4])(context, builder, offs_arr).nitems
    cp = data_ptr(context, builder, signature.args[7], c_arr)
    slots = []
    for r in range(MR):
        for h in range(2):
            ptr = builder.bitcast(builder.gep(cp, [const(r * NR + h * 8)]), acc_t.as_pointer())
            slot = cgutils.alloca_once(builder, acc_t)
            builder.store(ir.Constant(acc_t, None), slot)
            slots.append((slot, ptr))
    with cgutils.for_range(builder, n_taps) as taps:
        t = taps.index
        bt = builder.gep(bp0, [builder.load(builder.gep(op, [t]))])
        at = builder.gep(ap0, [builder.mul(builder.mul(t, c_v), const(MR))])
        with cgutils.for_range(builder, c_v) as loop:
            k = loop.index
            bk = builder.gep(bt, [builder.mul(k, cs_v)])
            b0 = builder.load(builder.bitcast(bk, b_t.as_pointer()), align=2)
            b1 = builder.load(builder.bitcast(builder.gep(bk, [const(half)]), b_t.as_pointer()),
                              align=2)
            ak = builder.gep(at, [builder.mul(k, const(MR))])
            for r in range(MR):
                scalar = builder.load(builder.gep(ak, [const(r)]))
                vec = builder.insert_element(ir.Constant(acc_t, ir.Undefined), scalar,
                                             ir.Constant(i32, 0))
                vec = builder.shuffle_vector(vec, vec, zeros8)
                if b_t != acc_t:
                    vec = builder.bitcast(vec, b_t)
                for h, bv in enumerate((b0, b1)):
                    slot = slots[r * 2 + h][0]
                    builder.store(step(builder.load(slot), vec, bv), slot)
    for slot, ptr in slots:
        builder.store(builder.load(slot), ptr, align=4)
