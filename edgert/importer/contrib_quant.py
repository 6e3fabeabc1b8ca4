"""onnxruntime's quantized contrib operators (domain ``com.microsoft``), and ONNX's QLinearConv,
lowered at import.

See :mod:`edgert.importer.contrib` for how a rule works. Every rule follows what onnxruntime's
CPU kernels compute (1.32, x86-64), not only the one-line formula of its operator docs: the
QOperator forms of ``onnxruntime.quantization.quantize_static`` (QLinearAdd, QGemm...), the
forms ``quantize_dynamic`` writes (DynamicQuantizeMatMul, MatMulIntegerToFloat,
DynamicQuantizeLSTM) and the block-quantized weights of LLM exports (MatMulNBits).

How exact the lowering is, measured against onnxruntime (tests/test_contrib_quant.py):

* QLinearLeakyRelu / QLinearConcat / QLinearWhere: equal (onnxruntime's lookup tables are built
  by the same dequantize -> float op -> quantize arithmetic).
* QLinearAdd / QLinearMul: onnxruntime computes in float32 and requantizes with
  round-half-to-even and saturation, as DequantizeLinear -> op -> QuantizeLinear does, but its
  AVX2 kernel folds ``a_scale / c_scale`` into a fused multiply-add, so an output within a
  float32 rounding error of a .5 tie can differ by one step: about one element in 10^6 on random
  data (1 of 202,400 in the tests), never more than one step.
* QGemm, QLinearGlobalAveragePool: exact. The integer accumulator, the float32 output scale
  computed in onnxruntime's order and the final ``rint(acc * scale) + zero_point`` are expressed
  as such (MatMulInteger / an int32 ReduceSum, Cast, Mul, then QuantizeLinear of scale 1).
* QLinearAveragePool: onnxruntime sums the dequantized window in float32 and divides by the
  count; edgert's AveragePool multiplies by the reciprocal count, so a window whose result is an
  exact .5 tie in onnxruntime's arithmetic can round the other way (2 of 512 elements of one
  tensor of the quantize_static test model; none in the operator tests).
* QLinearSigmoid and QLinearSoftmax: onnxruntime uses lookup tables built from its own
  approximations of exp / logistic; the lowering computes the float function, so outputs match
  within one step (none differed in the tests). QLinearSoftmax reproduces onnxruntime's
  ``floor(1 / y_scale)`` output multiplier; with an int8 output, onnxruntime wraps a value
  above 127 around (a probability of ~1 with y_zero_point -128) where edgert saturates.
* DynamicQuantizeMatMul / MatMulIntegerToFloat: the integer product is exact; the float
  epilogue matches to float32 rounding.
* DynamicQuantizeLSTM: a float LSTM on the dequantized weights. onnxruntime quantizes X and H
  to uint8 at every step, so results differ by that activation quantization noise.
* QLinearConv (ONNX's own operator, which ``quantize_static`` writes for every Conv in the
  QOperator format; registered in :data:`edgert.importer.upgrade.RULES`): DQ -> float32 Conv
  -> Q, where onnxruntime accumulates in int32 exactly and requantizes once, so an output
  within the float32 accumulation error of a .5 tie can round the other way: one step on 1 of
  87,744 elements over the operator tests' 128 cases (9 of 1,052,928 over 12 more seeds), none
  in the quantize_static test models.
* MatMulNBits: the weights are dequantized exactly as onnxruntime does (float32); the matmul
  then differs by float summation order only (and by onnxruntime's own int8 quantization of A
  when ``accuracy_level`` is 4). One documented difference: with g_idx, onnxruntime 1.32's CPU
  kernel ignores packed uint8 zero points (it uses the default); edgert applies them.

Rules (``RULES``; ``DQ``/``Q`` are DequantizeLinear/QuantizeLinear):

================================  ==================================================================
QLinearAdd, QLinearMul            ``Q(DQ(A) op DQ(B), C_scale, C_zp)``, NumPy broadcasting; scales
                                  and zero points per tensor (scalars or 1-element tensors)
QLinearSigmoid, QLinearLeakyRelu  ``Q(f(DQ(X)), Y_scale, Y_zp)``; LeakyRelu keeps ``alpha``
QLinearGlobalAveragePool          ``Q(Cast(ReduceSum(int32(X) - x_zp)) * (x_scale / (y_scale *
                                  HW)), 1, y_zp)`` over the spatial axes (``channels_last``: axes
                                  1..r-2); rank / spatial size taken at run time when unknown
QLinearAveragePool                ``Q(AveragePool(DQ(X)) / y_scale + y_zp, 1, 0)`` with every
                                  pooling attribute; ``channels_last`` through Transposes (rank
                                  from ``kernel_shape``); ceil_mode with count_include_pad divides
                                  every window by the kernel size, as onnxruntime (mean of the
                                  valid elements x LpPool(p=1) count of ones / kernel size)
QLinearConcat                     ``Q(Concat(DQ(X_i)...), Y_scale, Y_zp)``; a plain Concat when
                                  every input has the output's (constant) scale and zero point
QLinearSoftmax                    ``Q(Softmax(DQ(X)) * floor(1 / y_scale), 1, y_zp)``; ``opset`` <
                                  13 keeps Softmax's flattening semantic (node version < 13)
QLinearWhere                      ``Q(Where(cond, DQ(X), DQ(Y)), z_scale, z_zp)``
QLinearReduceMean                 ``Q(ReduceMean(DQ(X), axes, keepdims), reduced_scale, zp)`` (the
                                  documented form; onnxruntime has no CPU kernel for it)
QGemm                             ``MatMulInteger(A', B', a_zp, b_zp) (+ C int32)``, Cast, ``*
                                  (alpha * a_scale * b_scale[n] [/ y_scale])``; ``Q(., 1, y_zp)``
                                  when ``y_scale`` is given, float output otherwise; trans via
                                  Transpose (constant B transposed at import); per-column b
DynamicQuantizeMatMul             ``DynamicQuantizeLinear(A)``, MatMulInteger, Cast, ``* (a_scale *
                                  b_scale)`` (+ bias); per-tensor or per-column B
MatMulIntegerToFloat              MatMulInteger, Cast, ``* (a_scale * b_scale)`` (+ bias)
DynamicQuantizeLSTM               LSTM on ``W = (Wq - zp) * scale`` (per direction, or per
                                  direction and gate column), transposed to ONNX's
                                  ``[dirs, 4H, I]``; constant weights only
MatMulNBits                       4/8-bit, uint8 (or absent: 2^(bits-1)) zero points, default
                                  g_idx: ``MatMul(A, DQ(Bq^T [K, N] uint4/uint8, scales^T, zp^T,
                                  axis 0, block_size))`` (+ bias), opset-21 blocked DQ; 2-bit,
                                  float zero points (``q * s - s * zp``) or a reordering g_idx: a
                                  float32 weight dequantized at import; float16 A computed in
                                  float32 between Casts (as onnxruntime does); an empty B (omitted
                                  projection) gives zeros (+ bias)
QLinearConv (default domain)      ``Q(Conv(DQ(x), DQ(w, axis 0), DQ(B, x_scale * w_scale, axis 0)),
                                  y_scale, y_zp)``, every Conv attribute kept; w per tensor or per
                                  output channel (a constant weight stays int8/uint8 behind its
                                  DQ); zero points given as "" are 0
================================  ==================================================================

Declined: non-constant weights where a rule needs them (MatMulNBits B/scales/zero points/g_idx,
DynamicQuantizeLSTM W/R and their parameters), per-channel scales where onnxruntime only takes
per-tensor ones, QGemm with ``y_scale`` but no ``y_zero_point``, MatMulNBits ``weight_prepacked``
layouts and bfloat16, float16 MatMulIntegerToFloat (no onnxruntime CPU kernel to follow),
unknown attributes, and malformed nodes (wrong input counts, types or shapes of constant
parameters), each with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgert import dtypes
from edgert.importer.upgrade import Decline, Rewrite, Rule
from edgert.ir import Value

_I8 = np.dtype(np.int8)
_U8 = np.dtype(np.uint8)
_F32 = np.dtype(np.float32)
_F16 = np.dtype(np.float16)


# ----- small helpers ------------------------------------------------------------------------------
def _v(rw: Rewrite, version: int) -> int:
    """A default-domain version at least ``version`` (and at least the model's opset)."""
    return max(rw.opset, version)


def _check_attrs(rw: Rewrite, allowed: Sequence[str]) -> None:
    extra = sorted(set(rw.node.attrs) - set(allowed))
    if extra:
        raise Decline(f"{rw.node.op_type}: unknown attribute(s) {', '.join(extra)}")


def _code(dt: np.dtype) -> int:
    return dtypes.from_numpy(np.dtype(dt))


def _insert(rw: Rewrite, op: str, inputs: Sequence[Value | None], what: str, version: int,
            attrs: dict | None = None, dtype: int = 0) -> Value:
    """Insert ``op`` before the node; return its (single) output."""
    name = rw.graph.unique_name(f"{rw.node.name}_{what}")
    out = rw.graph.new_value(name, dtype)
    rw.graph.insert_before(rw.node, op, list(inputs), [out], dict(attrs or {}), name=name,
                           version=version)
    return out


def _become(rw: Rewrite, op: str, inputs: Sequence[Value | None], attrs: dict | None = None
            ) -> None:
    """Rewrite the node itself into ``op`` with these inputs and attributes."""
    node = rw.node
    for v in node.inputs:
        if v is not None:
            v.consumers.remove(node)
    ins = list(inputs)
    while ins and ins[-1] is None:
        ins.pop()
    node.inputs = ins
    for v in ins:
        if v is not None:
            v.consumers.append(node)
    node.op_type = op
    node.attrs = dict(attrs or {})


def _set_out_dtype(rw: Rewrite, dt: np.dtype, i: int = 0) -> None:
    out = rw.node.outputs[i] if i < len(rw.node.outputs) else None
    if out is not None and not out.dtype:
        out.dtype = _code(dt)


def _known_dtype(rw: Rewrite, v: Value | None) -> np.dtype | None:
    if v is None:
        return None
    try:
        return np.dtype(rw.np_dtype(v, ""))
    except Decline:
        return None


def _need(rw: Rewrite, i: int, what: str) -> Value:
    v = rw.input(i)
    if v is None:
        raise Decline(f"{rw.node.op_type}: input {i} ({what}) is required")
    return v


def _check_count(rw: Rewrite, lo: int, hi: int) -> None:
    n = len(rw.node.inputs)
    if n < lo or n > hi:
        want = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise Decline(f"{rw.node.op_type}: expected {want} inputs, got {n}")


def _scale(rw: Rewrite, i: int, what: str, per_tensor: bool = True) -> Value:
    """A float32 scale input; a constant per-tensor one must hold one value."""
    v = _need(rw, i, what)
    dt = _known_dtype(rw, v)
    if dt is not None and dt != _F32:
        raise Decline(f"{rw.node.op_type}: {what} must be float32, got {dt}")
    data = rw.const_of(v)
    if per_tensor and data is not None and data.size != 1:
        raise Decline(f"{rw.node.op_type}: {what} must be a scalar (per-tensor), got shape "
                      f"{tuple(data.shape)}")
    if data is not None and not np.all(np.isfinite(data)):
        raise Decline(f"{rw.node.op_type}: {what} is not finite")
    return v


def _zero_point(rw: Rewrite, i: int, what: str, qtype: np.dtype | None,
                required: bool = False, per_tensor: bool = True) -> Value | None:
    """An int8/uint8 zero point input (None when omitted and optional)."""
    v = rw.input(i)
    if v is None:
        if required:
            raise Decline(f"{rw.node.op_type}: input {i} ({what}) is required")
        return None
    dt = _known_dtype(rw, v)
    if dt is not None and dt not in (_I8, _U8):
        raise Decline(f"{rw.node.op_type}: {what} must be int8 or uint8, got {dt}")
    if dt is not None and qtype is not None and dt != qtype:
        raise Decline(f"{rw.node.op_type}: {what} is {dt} but the tensor it belongs to is "
                      f"{qtype}")
    data = rw.const_of(v)
    if per_tensor and data is not None and data.size != 1:
        raise Decline(f"{rw.node.op_type}: {what} must be a scalar (per-tensor), got shape "
                      f"{tuple(data.shape)}")
    return v


def _qtype(rw: Rewrite, *candidates: Value | None) -> np.dtype:
    """The 8-bit type of a quantized tensor, from the first candidate whose type is known."""
    for v in candidates:
        dt = _known_dtype(rw, v)
        if dt is not None:
            if dt not in (_I8, _U8):
                raise Decline(f"{rw.node.op_type}: quantized tensors must be int8 or uint8, "
                              f"got {dt}")
            return dt
    raise Decline(f"{rw.node.op_type}: the quantized element type (int8 or uint8) is unknown "
                  "(no zero point is given and the input's type is not declared)")


def _zp_or_zero(rw: Rewrite, zp: Value | None, qt: np.dtype, what: str) -> Value:
    return zp if zp is not None else rw.const(what, np.zeros((), qt))


def _f32(rw: Rewrite, what: str, x: float) -> Value:
    return rw.const(what, np.array(x, np.float32))


def _arith(rw: Rewrite, op: str, a: Value, b: Value, what: str) -> Value:
    """``a op b`` in float32: a new constant when both are constants, else an inserted node."""
    da, db = rw.const_of(a), rw.const_of(b)
    if da is not None and db is not None:
        fn = {"Mul": np.multiply, "Div": np.divide, "Add": np.add, "Sub": np.subtract}[op]
        with np.errstate(all="ignore"):
            r = fn(np.asarray(da, np.float32), np.asarray(db, np.float32))
        return rw.const(what, np.asarray(r, np.float32))
    return _insert(rw, op, [a, b], what, _v(rw, 14), dtype=dtypes.FLOAT)


def _dq(rw: Rewrite, x: Value, scale: Value, zp: Value | None, what: str) -> Value:
    return _insert(rw, "DequantizeLinear", [x, scale, zp], what, _v(rw, 13), dtype=dtypes.FLOAT)


def _final_q(rw: Rewrite, x: Value, scale: Value, zp: Value, qt: np.dtype) -> int:
    """Make the node ``QuantizeLinear(x, scale, zp)``; returns its version."""
    _become(rw, "QuantizeLinear", [x, scale, zp])
    _set_out_dtype(rw, qt)
    return _v(rw, 13)


# ----- elementwise --------------------------------------------------------------------------------
def _qlinear_binary(float_op: str) -> Rule:
    def rule(rw: Rewrite) -> int:
        _check_attrs(rw, ())
        _check_count(rw, 7, 8)
        a, b = _need(rw, 0, "A"), _need(rw, 3, "B")
        qt = _qtype(rw, rw.input(2), rw.input(5), rw.input(7), a, b)
        for v, name in ((a, "A"), (b, "B")):
            dt = _known_dtype(rw, v)
            if dt is not None and dt != qt:
                raise Decline(f"{rw.node.op_type}: {name} is {dt}, expected {qt}")
        a_s, b_s, c_s = _scale(rw, 1, "A_scale"), _scale(rw, 4, "B_scale"), _scale(rw, 6,
                                                                                     "C_scale")
        a_zp = _zero_point(rw, 2, "A_zero_point", qt)
        b_zp = _zero_point(rw, 5, "B_zero_point", qt)
        c_zp = _zp_or_zero(rw, _zero_point(rw, 7, "C_zero_point", qt), qt, "c_zero_point")
        fa = _dq(rw, a, a_s, a_zp, "a_float")
        fb = _dq(rw, b, b_s, b_zp, "b_float")
        fc = _insert(rw, float_op, [fa, fb], "float", _v(rw, 14), dtype=dtypes.FLOAT)
        return _final_q(rw, fc, c_s, c_zp, qt)

    return rule


def _qlinear_unary(float_op: str, float_attrs: Sequence[tuple[str, float]] = ()) -> Rule:
    def rule(rw: Rewrite) -> int:
        _check_attrs(rw, [k for k, _ in float_attrs])
        _check_count(rw, 4, 5)
        x = _need(rw, 0, "X")
        qt = _qtype(rw, rw.input(2), rw.input(4), x)
        x_s, y_s = _scale(rw, 1, "X_scale"), _scale(rw, 3, "Y_scale")
        x_zp = _zero_point(rw, 2, "X_zero_point", qt)
        y_zp = _zp_or_zero(rw, _zero_point(rw, 4, "Y_zero_point", qt), qt, "y_zero_point")
        attrs = {k: float(rw.attr(k, default)) for k, default in float_attrs}
        fx = _dq(rw, x, x_s, x_zp, "x_float")
        fy = _insert(rw, float_op, [fx], "float", _v(rw, 13), attrs, dtype=dtypes.FLOAT)
        return _final_q(rw, fy, y_s, y_zp, qt)

    return rule


def qlinear_where(rw: Rewrite) -> int:
    """QLinearWhere: ``Q(Where(cond, DQ(X), DQ(Y)), z_scale, z_zp)``."""
    _check_attrs(rw, ())
    _check_count(rw, 9, 9)
    cond, x, y = _need(rw, 0, "condition"), _need(rw, 1, "X"), _need(rw, 4, "Y")
    qt = _qtype(rw, rw.input(3), rw.input(6), rw.input(8), x, y)
    x_zp = _zero_point(rw, 3, "x_zero_point", qt, required=True)
    y_zp = _zero_point(rw, 6, "y_zero_point", qt, required=True)
    z_zp = _zero_point(rw, 8, "z_zero_point", qt, required=True)
    fx = _dq(rw, x, _scale(rw, 2, "x_scale"), x_zp, "x_float")
    fy = _dq(rw, y, _scale(rw, 5, "y_scale"), y_zp, "y_float")
    fz = _insert(rw, "Where", [cond, fx, fy], "float", _v(rw, 16), dtype=dtypes.FLOAT)
    return _final_q(rw, fz, _scale(rw, 7, "z_scale"), z_zp, qt)


def qlinear_concat(rw: Rewrite) -> int:
    """QLinearConcat(Y_scale, Y_zp, (X, X_scale, X_zp)...): ``Q(Concat(DQ(X_i)...))``."""
    _check_attrs(rw, ("axis",))
    if "axis" not in rw.node.attrs:
        raise Decline("QLinearConcat: attribute 'axis' is required")
    axis = int(rw.attr("axis"))
    n = len(rw.node.inputs)
    if n < 5 or (n - 2) % 3:
        raise Decline(f"QLinearConcat: inputs must be Y_scale, Y_zero_point and (X, X_scale, "
                      f"X_zero_point) triples; got {n} inputs")
    y_s = _scale(rw, 0, "Y_scale")
    triples = [(i, i + 1, i + 2) for i in range(2, n, 3)]
    qt = _qtype(rw, rw.input(1), *[rw.input(k) for t in triples for k in (t[2], t[0])])
    y_zp = _zero_point(rw, 1, "Y_zero_point", qt, required=True)
    xs = []
    for xi, si, zi in triples:
        x = _need(rw, xi, "X")
        dt = _known_dtype(rw, x)
        if dt is not None and dt != qt:
            raise Decline(f"QLinearConcat: input {xi} is {dt}, expected {qt}")
        xs.append((x, _scale(rw, si, f"input {si} (scale)"),
                   _zero_point(rw, zi, f"input {zi} (zero point)", qt, required=True)))

    def same(a: Value, b: Value) -> bool:
        da, db = rw.const_of(a), rw.const_of(b)
        return (da is not None and db is not None
                and np.array_equal(np.asarray(da).reshape(-1), np.asarray(db).reshape(-1)))

    if all(same(s, y_s) and same(z, y_zp) for _, s, z in xs):
        # onnxruntime copies such inputs: the quantized values concatenate as they are
        _become(rw, "Concat", [x for x, _, _ in xs], {"axis": axis})
        _set_out_dtype(rw, qt)
        return _v(rw, 13)
    floats = [_dq(rw, x, s, z, f"x{k}_float") for k, (x, s, z) in enumerate(xs)]
    cat = _insert(rw, "Concat", floats, "float", _v(rw, 13), {"axis": axis}, dtype=dtypes.FLOAT)
    return _final_q(rw, cat, y_s, y_zp, qt)


# ----- pooling and reductions ---------------------------------------------------------------------
def _spatial(rw: Rewrite, x: Value, channels_last: bool) -> tuple[Value, Value]:
    """(int64 axes of the spatial dims, their element count as a float32 scalar) of ``x``."""
    rank = rw.rank(x)
    if rank is not None and rank < 3:
        raise Decline(f"{rw.node.op_type}: input rank must be at least 3, got {rank}")
    first = 1 if channels_last else 2
    shape = x.shape if x.shape is not None and rank is not None else None
    if rank is not None:
        axes = rw.int64s("axes", range(first, first + rank - 2))
        dims = None if shape is None else shape[first:first + rank - 2]
        if dims is not None and all(isinstance(d, int) for d in dims):
            return axes, _f32(rw, "count", float(np.prod(dims, dtype=np.int64)))
    attrs = {"start": first} if not channels_last else {"start": 1, "end": -1}
    dims_v = _insert(rw, "Shape", [x], "spatial_dims", _v(rw, 15), attrs, dtype=dtypes.INT64)
    if rank is None:
        size = _insert(rw, "Size", [dims_v], "spatial_rank", _v(rw, 13), dtype=dtypes.INT64)
        start = rw.const("axes_start", np.array(first, np.int64))
        limit = _insert(rw, "Add", [size, start], "axes_limit", _v(rw, 14), dtype=dtypes.INT64)
        axes = _insert(rw, "Range", [start, limit, rw.const("axes_step", np.array(1, np.int64))],
                       "axes", _v(rw, 11), dtype=dtypes.INT64)
    count = _insert(rw, "ReduceProd", [dims_v], "count_int", _v(rw, 18), {"keepdims": 0},
                    dtype=dtypes.INT64)
    count_f = _insert(rw, "Cast", [count], "count", _v(rw, 13), {"to": dtypes.FLOAT},
                      dtype=dtypes.FLOAT)
    return axes, count_f


def qlinear_global_average_pool(rw: Rewrite) -> int:
    """QLinearGlobalAveragePool: onnxruntime's integer sum and float32 requantization."""
    _check_attrs(rw, ("channels_last",))
    _check_count(rw, 5, 5)
    channels_last = int(rw.attr("channels_last", 0))
    if channels_last not in (0, 1):
        raise Decline(f"QLinearGlobalAveragePool: channels_last = {channels_last} must be 0 or 1")
    x = _need(rw, 0, "X")
    qt = _qtype(rw, rw.input(2), rw.input(4), x)
    x_s, y_s = _scale(rw, 1, "x_scale"), _scale(rw, 3, "y_scale")
    x_zp = _zero_point(rw, 2, "x_zero_point", qt, required=True)
    y_zp = _zero_point(rw, 4, "y_zero_point", qt, required=True)
    axes, count = _spatial(rw, x, bool(channels_last))
    # acc = sum(x) - x_zp * HW in int32, as onnxruntime accumulates (exact for any image size)
    xi = _insert(rw, "Cast", [x], "x_int", _v(rw, 13), {"to": dtypes.INT32}, dtype=dtypes.INT32)
    zp_data = rw.const_of(x_zp)
    if zp_data is not None:
        zi = rw.const("x_zero_point_int", np.asarray(zp_data).astype(np.int32).reshape(()))
    else:
        zi = _insert(rw, "Cast", [x_zp], "x_zero_point_int", _v(rw, 13), {"to": dtypes.INT32},
                     dtype=dtypes.INT32)
    shifted = _insert(rw, "Sub", [xi, zi], "x_shifted", _v(rw, 14), dtype=dtypes.INT32)
    acc = _insert(rw, "ReduceSum", [shifted, axes], "sum", _v(rw, 13),
                  {"keepdims": 1, "noop_with_empty_axes": 1}, dtype=dtypes.INT32)
    acc_f = _insert(rw, "Cast", [acc], "sum_float", _v(rw, 13), {"to": dtypes.FLOAT},
                    dtype=dtypes.FLOAT)
    # scale = x_scale / (y_scale * HW), in float32 as onnxruntime computes it
    scale = _arith(rw, "Div", x_s, _arith(rw, "Mul", y_s, count, "y_scale_hw"), "scale")
    y = _insert(rw, "Mul", [acc_f, scale], "scaled", _v(rw, 14), dtype=dtypes.FLOAT)
    return _final_q(rw, y, _f32(rw, "one", 1.0), y_zp, qt)


_POOL_ATTRS = ("auto_pad", "ceil_mode", "channels_last", "count_include_pad", "kernel_shape",
               "pads", "strides")


def qlinear_average_pool(rw: Rewrite) -> int:
    """QLinearAveragePool: ``Q(AveragePool(DQ(X)))`` with Transposes for ``channels_last``."""
    _check_attrs(rw, _POOL_ATTRS)
    _check_count(rw, 4, 5)
    kernel = rw.attr("kernel_shape")
    if not kernel:
        raise Decline("QLinearAveragePool: attribute 'kernel_shape' is required")
    nsp = len(kernel)
    for name in ("pads", "strides"):
        val = rw.attr(name)
        if val is not None and len(val) != (2 * nsp if name == "pads" else nsp):
            raise Decline(f"QLinearAveragePool: '{name}' has {len(val)} values for {nsp} spatial "
                          "axes")
    channels_last = int(rw.attr("channels_last", 0))
    if channels_last not in (0, 1):
        raise Decline(f"QLinearAveragePool: channels_last = {channels_last} must be 0 or 1")
    x = _need(rw, 0, "X")
    rank = rw.rank(x)
    if rank is not None and rank != nsp + 2:
        raise Decline(f"QLinearAveragePool: input rank {rank} does not match kernel_shape "
                      f"{list(kernel)}")
    qt = _qtype(rw, rw.input(2), rw.input(4), x)
    x_s, y_s = _scale(rw, 1, "x_scale"), _scale(rw, 3, "y_scale")
    x_zp = _zero_point(rw, 2, "x_zero_point", qt)
    y_zp = _zp_or_zero(rw, _zero_point(rw, 4, "y_zero_point", qt), qt, "y_zero_point")
    fx = _dq(rw, x, x_s, x_zp, "x_float")
    r = nsp + 2
    if channels_last:
        fx = _insert(rw, "Transpose", [fx], "x_nchw", _v(rw, 13),
                     {"perm": [0, r - 1, *range(1, r - 1)]}, dtype=dtypes.FLOAT)
    attrs = {k: v for k, v in rw.node.attrs.items() if k != "channels_last"}
    if int(rw.attr("ceil_mode", 0)) and int(rw.attr("count_include_pad", 0)):
        # onnxruntime divides every window by the full kernel size, also the last ceil-mode
        # windows that run past the end padding (AveragePool excludes that overhang): the
        # window sum is (mean over the input's elements) x (their count, LpPool p=1 of ones)
        attrs["count_include_pad"] = 0
        mean = _insert(rw, "AveragePool", [fx], "valid_mean", _v(rw, 19), attrs,
                       dtype=dtypes.FLOAT)
        shape = _insert(rw, "Shape", [fx], "x_shape", _v(rw, 15), dtype=dtypes.INT64)
        ones = _insert(rw, "ConstantOfShape", [shape], "ones", _v(rw, 9),
                       {"value": np.ones(1, np.float32)}, dtype=dtypes.FLOAT)
        lp = {k: v for k, v in attrs.items() if k != "count_include_pad"}
        lp["p"] = 1
        count = _insert(rw, "LpPool", [ones], "valid_count", _v(rw, 18), lp, dtype=dtypes.FLOAT)
        total = _insert(rw, "Mul", [mean, count], "window_sum", _v(rw, 14), dtype=dtypes.FLOAT)
        ksize = _f32(rw, "kernel_size", float(np.prod([int(d) for d in kernel])))
        y = _insert(rw, "Div", [total, ksize], "float", _v(rw, 14), dtype=dtypes.FLOAT)
    else:
        y = _insert(rw, "AveragePool", [fx], "float", _v(rw, 19), attrs, dtype=dtypes.FLOAT)
    if channels_last:
        y = _insert(rw, "Transpose", [y], "y_nhwc", _v(rw, 13),
                    {"perm": [0, *range(2, r), 1]}, dtype=dtypes.FLOAT)
    # onnxruntime rounds y / y_scale + y_zp (the zero point added in float32, then rint)
    y = _insert(rw, "Div", [y, y_s], "y_scaled", _v(rw, 14), dtype=dtypes.FLOAT)
    zp_data = rw.const_of(y_zp)
    zf = (rw.const("y_zero_point_float", np.asarray(zp_data, np.float32).reshape(()))
          if zp_data is not None else
          _insert(rw, "Cast", [y_zp], "y_zero_point_float", _v(rw, 13), {"to": dtypes.FLOAT},
                  dtype=dtypes.FLOAT))
    y = _insert(rw, "Add", [y, zf], "y_shifted", _v(rw, 14), dtype=dtypes.FLOAT)
    return _final_q(rw, y, _f32(rw, "one", 1.0), rw.const("zero", np.zeros((), qt)), qt)


def qlinear_reduce_mean(rw: Rewrite) -> int:
    """QLinearReduceMean: ``Q(ReduceMean(DQ(data), axes, keepdims))`` (its documented form)."""
    _check_attrs(rw, ("axes", "keepdims"))
    _check_count(rw, 4, 5)
    if "axes" not in rw.node.attrs or "keepdims" not in rw.node.attrs:
        raise Decline("QLinearReduceMean: attributes 'axes' and 'keepdims' are required")
    x = _need(rw, 0, "data")
    qt = _qtype(rw, rw.input(2), rw.input(4), x)
    fx = _dq(rw, x, _scale(rw, 1, "data_scale"), _zero_point(rw, 2, "data_zero_point", qt),
             "x_float")
    axes = [int(a) for a in rw.attr("axes")]
    ins = [fx, rw.int64s("axes", axes)] if axes else [fx]
    y = _insert(rw, "ReduceMean", ins, "float", _v(rw, 18),
                {"keepdims": int(rw.attr("keepdims"))}, dtype=dtypes.FLOAT)
    y_zp = _zp_or_zero(rw, _zero_point(rw, 4, "reduced_zero_point", qt), qt, "y_zero_point")
    return _final_q(rw, y, _scale(rw, 3, "reduced_scale"), y_zp, qt)


def qlinear_softmax(rw: Rewrite) -> int:
    """QLinearSoftmax: float Softmax, requantized as onnxruntime does (``floor(1/y_scale)``)."""
    _check_attrs(rw, ("axis", "opset"))
    _check_count(rw, 4, 5)
    if "opset" not in rw.node.attrs:
        raise Decline("QLinearSoftmax: attribute 'opset' is required")
    opset = int(rw.attr("opset"))
    if opset < 1:
        raise Decline(f"QLinearSoftmax: opset = {opset} is not an ONNX opset")
    axis = int(rw.attr("axis", 1 if opset < 13 else -1))
    x = _need(rw, 0, "X")
    rank = rw.rank(x)
    if rank is not None and not -rank <= axis < max(rank, 1):
        raise Decline(f"QLinearSoftmax: axis {axis} is out of range for rank {rank}")
    qt = _qtype(rw, rw.input(2), rw.input(4), x)
    fx = _dq(rw, x, _scale(rw, 1, "X_scale"), _zero_point(rw, 2, "x_zero_point", qt), "x_float")
    # opset < 13: Softmax over the input flattened to 2-D at axis (Softmax-11's own semantic)
    version = min(opset, 11) if opset < 13 else _v(rw, 13)
    p = _insert(rw, "Softmax", [fx], "float", version, {"axis": axis}, dtype=dtypes.FLOAT)
    # onnxruntime multiplies the probabilities by floor(1 / y_scale), then rounds
    y_s = _scale(rw, 3, "y_scale")
    data = rw.const_of(y_s)
    if data is not None:
        with np.errstate(all="ignore"):
            mult = rw.const("y_multiplier",
                            np.floor(np.float32(1.0) / np.float32(np.asarray(data).reshape(-1)[0]))
                            .astype(np.float32))
    else:
        recip = _arith(rw, "Div", _f32(rw, "one_f", 1.0), y_s, "y_inverse")
        mult = _insert(rw, "Floor", [recip], "y_multiplier", _v(rw, 13), dtype=dtypes.FLOAT)
    y = _insert(rw, "Mul", [p, mult], "scaled", _v(rw, 14), dtype=dtypes.FLOAT)
    y_zp = _zp_or_zero(rw, _zero_point(rw, 4, "y_zero_point", qt), qt, "y_zero_point")
    return _final_q(rw, y, _f32(rw, "one", 1.0), y_zp, qt)


# ----- matrix products ----------------------------------------------------------------------------
def _per_column(rw: Rewrite, v: Value | None, what: str, n: int | None) -> None:
    """A scale / zero point that is a scalar, a 1-element tensor or one value per column."""
    data = rw.const_of(v)
    if data is None:
        return
    if data.ndim > 1 or (data.size != 1 and n is not None and data.size != n):
        raise Decline(f"{rw.node.op_type}: {what} must be a scalar or have one value per column "
                      f"({n}), got shape {tuple(data.shape)}")


def _int_matmul(rw: Rewrite, a: Value, b: Value, a_zp: Value | None, b_zp: Value | None
                ) -> Value:
    return _insert(rw, "MatMulInteger", [a, b, a_zp, b_zp], "int_product", _v(rw, 10),
                   dtype=dtypes.INT32)


def _to_float(rw: Rewrite, acc: Value) -> Value:
    return _insert(rw, "Cast", [acc], "product_float", _v(rw, 13), {"to": dtypes.FLOAT},
                   dtype=dtypes.FLOAT)


def _finish_float(rw: Rewrite, acc_f: Value, mult: Value, bias: Value | None) -> int:
    """The node becomes ``acc_f * mult`` (+ bias)."""
    if bias is None:
        _become(rw, "Mul", [acc_f, mult])
    else:
        y = _insert(rw, "Mul", [acc_f, mult], "scaled", _v(rw, 14), dtype=dtypes.FLOAT)
        _become(rw, "Add", [y, bias])
    _set_out_dtype(rw, _F32)
    return _v(rw, 14)


def _b_columns(rw: Rewrite, b: Value) -> int | None:
    data = rw.const_of(b)
    if data is not None:
        return int(data.shape[-1]) if data.ndim >= 1 else None
    if b.shape is not None and b.shape and isinstance(b.shape[-1], int):
        return int(b.shape[-1])
    return None


def _bias(rw: Rewrite, i: int, n: int | None) -> Value | None:
    bias = rw.input(i)
    if bias is None:
        return None
    dt = _known_dtype(rw, bias)
    if dt is not None and dt != _F32:
        raise Decline(f"{rw.node.op_type}: bias must be float32, got {dt}")
    data = rw.const_of(bias)
    if data is not None and (data.ndim != 1 or (n is not None and data.shape[0] != n)):
        raise Decline(f"{rw.node.op_type}: bias must have shape [{n}], got {tuple(data.shape)}")
    return bias


def dynamic_quantize_matmul(rw: Rewrite) -> int:
    """DynamicQuantizeMatMul: A quantized to uint8 at run time, integer matmul, float epilogue."""
    _check_attrs(rw, ())
    _check_count(rw, 3, 5)
    a, b = _need(rw, 0, "A"), _need(rw, 1, "B")
    dt = _known_dtype(rw, a)
    if dt is not None and dt != _F32:
        raise Decline(f"DynamicQuantizeMatMul: A must be float32, got {dt}")
    bt = _qtype(rw, rw.input(3), b)
    n = _b_columns(rw, b)
    b_s = _scale(rw, 2, "b_scale", per_tensor=False)
    _per_column(rw, b_s, "b_scale", n)
    b_zp = _zero_point(rw, 3, "b_zero_point", bt, per_tensor=False)
    _per_column(rw, b_zp, "b_zero_point", n)
    bias = _bias(rw, 4, n)
    # DynamicQuantizeLinear: onnxruntime's own rule for A (uint8, range widened to include 0)
    name = rw.graph.unique_name(f"{rw.node.name}_quantize_a")
    aq = rw.graph.new_value(name + "_q", dtypes.UINT8)
    a_s = rw.graph.new_value(name + "_scale", dtypes.FLOAT, [])
    a_zp = rw.graph.new_value(name + "_zero_point", dtypes.UINT8, [])
    rw.graph.insert_before(rw.node, "DynamicQuantizeLinear", [a], [aq, a_s, a_zp], name=name,
                           version=_v(rw, 11))
    acc = _int_matmul(rw, aq, b, a_zp, b_zp)
    mult = _arith(rw, "Mul", a_s, b_s, "multiplier")
    return _finish_float(rw, _to_float(rw, acc), mult, bias)


def matmul_integer_to_float(rw: Rewrite) -> int:
    """MatMulIntegerToFloat: ``MatMulInteger(A, B, a_zp, b_zp) * (a_scale * b_scale) + bias``."""
    _check_attrs(rw, ())
    _check_count(rw, 4, 7)
    a, b = _need(rw, 0, "A"), _need(rw, 1, "B")
    at = _qtype(rw, rw.input(4), a)
    bt = _qtype(rw, rw.input(5), b)
    n = _b_columns(rw, b)
    for i in (2, 3):
        dt = _known_dtype(rw, rw.input(i))
        if dt is not None and dt != _F32:
            raise Decline(f"MatMulIntegerToFloat: only float32 scales and output are supported "
                          f"(onnxruntime's CPU kernel), got {dt}")
    a_s = _scale(rw, 2, "a_scale")
    b_s = _scale(rw, 3, "b_scale", per_tensor=False)
    _per_column(rw, b_s, "b_scale", n)
    a_zp = _zero_point(rw, 4, "a_zero_point", at)
    b_zp = _zero_point(rw, 5, "b_zero_point", bt, per_tensor=False)
    _per_column(rw, b_zp, "b_zero_point", n)
    bias = _bias(rw, 6, n)
    acc = _int_matmul(rw, a, b, a_zp, b_zp)
    mult = _arith(rw, "Mul", a_s, b_s, "multiplier")
    return _finish_float(rw, _to_float(rw, acc), mult, bias)


def qgemm(rw: Rewrite) -> int:
    """QGemm: integer Gemm (+ int32 C), float32 output scale, optional requantization."""
    _check_attrs(rw, ("alpha", "transA", "transB"))
    _check_count(rw, 6, 9)
    alpha = float(rw.attr("alpha", 1.0))
    trans_a, trans_b = int(rw.attr("transA", 0)), int(rw.attr("transB", 0))
    if trans_a not in (0, 1) or trans_b not in (0, 1):
        raise Decline(f"QGemm: transA = {trans_a}, transB = {trans_b} must be 0 or 1")
    a, b = _need(rw, 0, "A"), _need(rw, 3, "B")
    at = _qtype(rw, rw.input(2), a)
    bt = _qtype(rw, rw.input(5), b)
    for v, what in ((a, "A"), (b, "B")):
        r = rw.rank(v)
        if r is not None and r != 2:
            raise Decline(f"QGemm: {what} must be 2-D, got rank {r}")
    a_s = _scale(rw, 1, "a_scale")
    a_zp = _zero_point(rw, 2, "a_zero_point", at, required=True)
    b_data = rw.const_of(b)
    if trans_b:
        if b_data is not None:
            b = rw.const("b_transposed", np.ascontiguousarray(np.asarray(b_data).T))
        else:
            b = _insert(rw, "Transpose", [b], "b_transposed", _v(rw, 13), {"perm": [1, 0]},
                        dtype=_code(bt))
    if trans_a:
        a = _insert(rw, "Transpose", [a], "a_transposed", _v(rw, 13), {"perm": [1, 0]},
                    dtype=_code(at))
    n = _b_columns(rw, b) if b_data is not None else None
    b_s = _scale(rw, 4, "b_scale", per_tensor=False)
    _per_column(rw, b_s, "b_scale", n)
    b_zp = _zero_point(rw, 5, "b_zero_point", bt, required=True, per_tensor=False)
    _per_column(rw, b_zp, "b_zero_point", n)
    c = rw.input(6)
    if c is not None:
        dt = _known_dtype(rw, c)
        if dt is not None and dt != np.dtype(np.int32):
            raise Decline(f"QGemm: C must be int32, got {dt}")
    y_s, y_zp = rw.input(7), rw.input(8)
    if (y_s is None) != (y_zp is None):
        raise Decline("QGemm: y_scale and y_zero_point must be given together (onnxruntime's "
                      "output type is undefined with only one of them)")
    acc = _int_matmul(rw, a, b, a_zp, b_zp)
    if c is not None:
        acc = _insert(rw, "Add", [acc, c], "with_c", _v(rw, 14), dtype=dtypes.INT32)
    # output scale = alpha * a_scale * b_scale [/ y_scale], in float32 and in onnxruntime's order
    scale = _arith(rw, "Mul", _arith(rw, "Mul", _f32(rw, "alpha", alpha), a_s, "alpha_a_scale"),
                   b_s, "output_scale")
    acc_f = _to_float(rw, acc)
    if y_s is None:
        return _finish_float(rw, acc_f, scale, None)
    yt = _qtype(rw, y_zp)
    scale = _arith(rw, "Div", scale, _scale(rw, 7, "y_scale"), "requant_scale")
    y = _insert(rw, "Mul", [acc_f, scale], "scaled", _v(rw, 14), dtype=dtypes.FLOAT)
    return _final_q(rw, y, _f32(rw, "one", 1.0), _zero_point(rw, 8, "y_zero_point", yt), yt)


# ----- convolution (ONNX's own QLinearConv) -------------------------------------------------------
_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def _out_channels(rw: Rewrite, w: Value) -> int | None:
    """M, the output channel count: dim 0 of the weight, when it is known."""
    data = rw.const_of(w)
    if data is not None:
        return int(data.shape[0]) if data.ndim >= 1 else None
    if w.shape is not None and w.shape and isinstance(w.shape[0], int):
        return int(w.shape[0])
    return None


def _channel_param(rw: Rewrite, v: Value | None, what: str, m: int | None) -> Value | None:
    """A weight scale / zero point: per tensor (a constant of one value becomes a scalar) or
    one value per output channel (1-D, ``M`` values)."""
    if v is None:
        return None
    data = rw.const_of(v)
    if data is None:
        rank = rw.rank(v)
        if rank is not None and rank > 1:
            raise Decline(f"QLinearConv: {what} must be a scalar or 1-D, got rank {rank}")
        return v
    if data.size == 1:
        return rw.const(what, np.asarray(data).reshape(()))
    if data.ndim != 1 or (m is not None and data.shape[0] != m):
        raise Decline(f"QLinearConv: {what} must be a scalar or have one value per output "
                      f"channel ({m}), got shape {tuple(data.shape)}")
    return v


def qlinear_conv(rw: Rewrite) -> int:
    """QLinearConv (default domain, opset 10): ``Q(Conv(DQ(x), DQ(w), DQ(B)), y_scale, y_zp)``.

    The weight goes through a DequantizeLinear on axis 0 (per tensor, or per output channel),
    so a constant weight stays int8/uint8 in the model; the int32 bias is dequantized with scale
    ``x_scale * w_scale[c]`` (float32, one product per channel) and zero point 0. Every Conv
    attribute is kept. Zero points given as "" count as 0 of their tensor's type.
    """
    _check_attrs(rw, _CONV_ATTRS)
    _check_count(rw, 8, 9)
    x, w = _need(rw, 0, "x"), _need(rw, 3, "w")
    xt = _qtype(rw, rw.input(2), x)
    wt = _qtype(rw, rw.input(5), w)
    out = rw.node.outputs[0] if rw.node.outputs else None
    yt = _qtype(rw, rw.input(7), out, x)
    for v, what, want in ((x, "x", xt), (w, "w", wt)):
        dt = _known_dtype(rw, v)
        if dt is not None and dt != want:
            raise Decline(f"QLinearConv: {what} is {dt} but its zero point is {want}")
    w_rank = rw.rank(w)
    x_rank = rw.rank(x)
    if w_rank is not None and w_rank < 3:
        raise Decline(f"QLinearConv: w must have rank 3 or more ([M, C/group, k...]), got rank "
                      f"{w_rank}")
    if x_rank is not None and w_rank is not None and x_rank != w_rank:
        raise Decline(f"QLinearConv: x (rank {x_rank}) and w (rank {w_rank}) must have the "
                      "same rank")
    m = _out_channels(rw, w)
    x_s, y_s = _scale(rw, 1, "x_scale"), _scale(rw, 6, "y_scale")
    x_zp = _zero_point(rw, 2, "x_zero_point", xt)
    y_zp = _zp_or_zero(rw, _zero_point(rw, 7, "y_zero_point", yt), yt, "y_zero_point")
    w_s = _channel_param(rw, _scale(rw, 4, "w_scale", per_tensor=False), "w_scale", m)
    w_zp = _channel_param(rw, _zero_point(rw, 5, "w_zero_point", wt, per_tensor=False),
                          "w_zero_point", m)
    # DequantizeLinear wants its scale and zero point of one shape: widen a constant scalar
    # to the other's per-channel length
    s_data, z_data = rw.const_of(w_s), rw.const_of(w_zp)
    if s_data is not None and z_data is not None and s_data.ndim != z_data.ndim:
        n = max(s_data.size, z_data.size)
        if s_data.ndim == 0:
            w_s = rw.const("w_scale_channels", np.full(n, s_data, np.float32))
        else:
            w_zp = rw.const("w_zero_point_channels", np.full(n, z_data, z_data.dtype))
    bias = rw.input(8)
    if bias is not None:
        dt = _known_dtype(rw, bias)
        if dt is not None and dt != np.dtype(np.int32):
            raise Decline(f"QLinearConv: B must be int32, got {dt}")
        data = rw.const_of(bias)
        if data is not None and (data.ndim != 1 or (m is not None and data.shape[0] != m)):
            raise Decline(f"QLinearConv: B must have shape [{m}], got {tuple(data.shape)}")
    fx = _dq(rw, x, x_s, x_zp, "x_float")
    fw = _insert(rw, "DequantizeLinear", [w, w_s, w_zp], "w_float", _v(rw, 13), {"axis": 0},
                 dtype=dtypes.FLOAT)
    ins = [fx, fw]
    if bias is not None:
        # the bias shares the accumulator's scale x_scale * w_scale[c] (float32, as onnxruntime
        # computes the output scale), zero point 0
        b_s = _arith(rw, "Mul", x_s, w_s, "bias_scale")
        ins.append(_insert(rw, "DequantizeLinear", [bias, b_s], "bias_float", _v(rw, 13),
                           {"axis": 0}, dtype=dtypes.FLOAT))
    attrs = {k: v for k, v in rw.node.attrs.items() if k in _CONV_ATTRS}
    y = _insert(rw, "Conv", ins, "float", _v(rw, 11), attrs, dtype=dtypes.FLOAT)
    return _final_q(rw, y, y_s, y_zp, yt)


# ----- recurrent ----------------------------------------------------------------------------------
_LSTM_ATTRS = ("activation_alpha", "activation_beta", "activations", "clip", "direction",
               "hidden_size", "input_forget")


def _dequantized_lstm_weight(rw: Rewrite, i: int, what: str, dirs: int, hidden: int,
                             rows: int | None) -> np.ndarray:
    """``(Wq - zp) * scale`` of W or R ([dirs, rows, 4H]) as ONNX's float [dirs, 4H, rows]."""
    w = rw.const_of(_need(rw, i, what))
    si = 8 + 2 * (i - 1)  # W: 8, 9; R: 10, 11
    s = rw.const_of(_need(rw, si, f"{what}_scale"))
    z = rw.const_of(_need(rw, si + 1, f"{what}_zero_point"))
    if w is None or s is None or z is None:
        raise Decline(f"DynamicQuantizeLSTM: {what}, its scale and zero point must be constants")
    if w.dtype not in (_I8, _U8) or z.dtype != w.dtype:
        raise Decline(f"DynamicQuantizeLSTM: {what} ({w.dtype}) and its zero point ({z.dtype}) "
                      "must be int8 or uint8 alike")
    if s.dtype != _F32:
        raise Decline(f"DynamicQuantizeLSTM: {what}_scale must be float32, got {s.dtype}")
    if w.ndim != 3 or w.shape[0] != dirs or w.shape[2] != 4 * hidden or (
            rows is not None and w.shape[1] != rows):
        want = f"[{dirs}, {rows if rows is not None else 'input_size'}, {4 * hidden}]"
        raise Decline(f"DynamicQuantizeLSTM: {what} must have shape {want}, got {w.shape}")
    for p, name in ((s, "scale"), (z, "zero_point")):
        if p.shape not in ((dirs,), (dirs, 4 * hidden)):
            raise Decline(f"DynamicQuantizeLSTM: {what}_{name} must have shape [{dirs}] or "
                          f"[{dirs}, {4 * hidden}], got {p.shape}")
    s3 = s.reshape(dirs, 1, -1).astype(np.float32)
    z3 = z.reshape(dirs, 1, -1).astype(np.int32)
    wf = (w.astype(np.int32) - z3).astype(np.float32) * s3
    return np.ascontiguousarray(wf.transpose(0, 2, 1))


def dynamic_quantize_lstm(rw: Rewrite) -> int:
    """DynamicQuantizeLSTM: a float LSTM on the dequantized (transposed) W and R."""
    _check_attrs(rw, _LSTM_ATTRS)
    _check_count(rw, 12, 12)
    direction = rw.attr("direction", "forward")
    if isinstance(direction, bytes):
        direction = direction.decode()
    if direction not in ("forward", "reverse", "bidirectional"):
        raise Decline(f"DynamicQuantizeLSTM: unknown direction {direction!r}")
    dirs = 2 if direction == "bidirectional" else 1
    r_data = rw.const_of(_need(rw, 2, "R"))
    hidden = rw.attr("hidden_size")
    if hidden is None:
        if r_data is None or r_data.ndim != 3:
            raise Decline("DynamicQuantizeLSTM: hidden_size is missing and R is not a constant")
        hidden = int(r_data.shape[1])
    hidden = int(hidden)
    if hidden <= 0:
        raise Decline(f"DynamicQuantizeLSTM: hidden_size = {hidden} must be positive")
    w = _dequantized_lstm_weight(rw, 1, "W", dirs, hidden, None)
    r = _dequantized_lstm_weight(rw, 2, "R", dirs, hidden, hidden)
    x = _need(rw, 0, "X")
    dt = _known_dtype(rw, x)
    if dt is not None and dt != _F32:
        raise Decline(f"DynamicQuantizeLSTM: X must be float32, got {dt}")
    attrs = dict(rw.node.attrs)
    attrs["hidden_size"] = hidden
    ins = [x, rw.const("W", w), rw.const("R", r)] + [rw.input(i) for i in range(3, 8)]
    _become(rw, "LSTM", ins, attrs)
    for i in range(min(3, len(rw.node.outputs))):
        _set_out_dtype(rw, _F32, i)
    return _v(rw, 14)


# ----- 4-bit / 8-bit block-quantized weights ------------------------------------------------------
_NBITS_ATTRS = ("K", "N", "bits", "block_size", "accuracy_level", "weight_prepacked")


def _unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Unpack the last axis of ``packed`` (uint8) into ``count`` values, lowest bits first."""
    per = 8 // bits
    mask = (1 << bits) - 1
    parts = [(packed >> (bits * j)) & mask for j in range(per)]
    vals = np.stack(parts, axis=-1).reshape(*packed.shape[:-1], packed.shape[-1] * per)
    return vals[..., :count].astype(np.uint8)


def matmul_nbits(rw: Rewrite) -> int:
    """MatMulNBits: ``A @ dequantize(B)^T (+ bias)``, B block-quantized along K."""
    _check_attrs(rw, _NBITS_ATTRS)
    _check_count(rw, 3, 6)
    node = rw.node
    for name in ("K", "N", "block_size"):
        if name not in node.attrs:
            raise Decline(f"MatMulNBits: attribute '{name}' is required")
    k, n = int(rw.attr("K")), int(rw.attr("N"))
    bits, bs = int(rw.attr("bits", 4)), int(rw.attr("block_size"))
    if int(rw.attr("weight_prepacked", 0)):
        raise Decline("MatMulNBits: weight_prepacked B (an execution provider's own layout) is "
                      "not supported")
    if bits not in (2, 4, 8):
        raise Decline(f"MatMulNBits: bits = {bits}; 2, 4 and 8 are supported")
    if k <= 0 or n <= 0 or bs < 16 or bs & (bs - 1):
        raise Decline(f"MatMulNBits: K = {k}, N = {n} must be positive and block_size = {bs} a "
                      "power of two >= 16")
    kb = -(-k // bs)
    blob = bs * bits // 8
    a = _need(rw, 0, "A")
    at = _known_dtype(rw, a)
    b = rw.const_of(_need(rw, 1, "B"))
    s = rw.const_of(_need(rw, 2, "scales"))
    if b is None or s is None:
        raise Decline("MatMulNBits: B and scales must be constants")
    if b.dtype != _U8:
        raise Decline(f"MatMulNBits: B must be uint8, got {b.dtype}")
    if s.dtype not in (_F32, _F16):
        raise Decline(f"MatMulNBits: scales must be float32 or float16 (bfloat16 is not "
                      f"supported), got {s.dtype if s.dtype != np.uint16 else 'bfloat16'}")
    if at is not None and at != s.dtype:
        raise Decline(f"MatMulNBits: A ({at}) and scales ({s.dtype}) must have the same type")
    ft = s.dtype
    empty = b.size == 0
    if not empty and b.size != n * kb * blob:
        raise Decline(f"MatMulNBits: B must have shape [{n}, {kb}, {blob}] for K = {k}, N = {n}, "
                      f"bits = {bits}, block_size = {bs}; got {b.shape}")
    if not empty and s.size != n * kb:
        raise Decline(f"MatMulNBits: scales must have {n} x {kb} values, got shape {s.shape}")
    zp_v, g_v = rw.input(3), rw.input(4)
    zp = rw.const_of(zp_v)
    if zp_v is not None and zp is None:
        raise Decline("MatMulNBits: zero_points must be a constant")
    g_idx = rw.const_of(g_v)
    if g_v is not None and g_idx is None:
        raise Decline("MatMulNBits: g_idx must be a constant")
    bias = rw.input(5)
    if bias is not None:
        bd = rw.const_of(bias)
        bdt = _known_dtype(rw, bias)
        if bdt is not None and bdt != ft:
            raise Decline(f"MatMulNBits: bias must be {ft}, got {bdt}")
        if bd is not None and bd.shape != (n,):
            raise Decline(f"MatMulNBits: bias must have shape [{n}], got {bd.shape}")

    float_zp = zp is not None and zp.dtype != _U8
    if float_zp and zp.dtype != ft:
        raise Decline(f"MatMulNBits: zero_points must be uint8 (packed) or {ft}, got {zp.dtype}")
    if g_idx is not None:
        g_idx = np.asarray(g_idx).reshape(-1).astype(np.int64)
        if g_idx.size != k or np.any(g_idx < 0) or np.any(g_idx >= kb):
            raise Decline(f"MatMulNBits: g_idx must hold {k} block indices in [0, {kb})")
        if np.array_equal(g_idx, np.arange(k) // bs):
            g_idx = None  # the default grouping: nothing to reorder
    if empty:
        # an omitted projection: Y is zero (or the bias)
        w_const = np.zeros((k, n), np.float32)
        return _nbits_matmul(rw, a, ft, rw.const("weight", w_const), bias)

    q = _unpack_bits(b.reshape(n, kb * blob), bits, kb * bs)[:, :k]  # [N, K]
    scales = s.reshape(n, kb).astype(np.float32)
    default_zp = 1 << (bits - 1)
    if zp is None:
        zq = np.full((n, kb), default_zp, np.uint8)
    elif float_zp:
        if zp.size != n * kb:
            raise Decline(f"MatMulNBits: float zero_points must have {n} x {kb} values, got "
                          f"shape {zp.shape}")
        zq = None
    else:
        per_row = -(-kb * bits // 8)
        if zp.size != n * per_row:
            raise Decline(f"MatMulNBits: packed zero_points must have {n} x {per_row} bytes, got "
                          f"shape {zp.shape}")
        zq = _unpack_bits(zp.reshape(n, per_row), bits, kb)

    if bits in (4, 8) and not float_zp and g_idx is None:
        # weights stay block-quantized: uint4 / uint8 [K, N] behind a blocked DequantizeLinear
        code = dtypes.UINT4 if bits == 4 else dtypes.UINT8
        wq = rw.const("weight_q", np.ascontiguousarray(q.T))
        wz = rw.const("weight_zero_point", np.ascontiguousarray(zq.T))
        wq.dtype = wz.dtype = code
        ws = rw.const("weight_scale", np.ascontiguousarray(scales.T))
        attrs = {"axis": 0, "block_size": bs}
        if code == dtypes.UINT4:
            attrs["edgert_from_type"] = code
        w = _insert(rw, "DequantizeLinear", [wq, ws, wz], "weight", _v(rw, 21), attrs,
                    dtype=dtypes.FLOAT)
        return _nbits_matmul(rw, a, ft, w, bias)

    # dequantized here, in float32 as onnxruntime does
    group = (np.arange(k) // bs) if g_idx is None else g_idx
    sk = scales[:, group]  # [N, K]
    if float_zp:
        zf = zp.reshape(n, kb).astype(np.float32)[:, group]
        w_nk = q.astype(np.float32) * sk + (-sk * zf)
    else:
        w_nk = (q.astype(np.int32) - zq[:, group].astype(np.int32)).astype(np.float32) * sk
    return _nbits_matmul(rw, a, ft, rw.const("weight", np.ascontiguousarray(w_nk.T)), bias)


def _nbits_matmul(rw: Rewrite, a: Value, ft: np.dtype, w: Value, bias: Value | None) -> int:
    """The node becomes ``A @ W (+ bias)`` in float32 (float16 A: Casts around it)."""
    half = ft == _F16
    if half:
        a = _insert(rw, "Cast", [a], "a_float", _v(rw, 13), {"to": dtypes.FLOAT},
                    dtype=dtypes.FLOAT)
        if bias is not None:
            bd = rw.const_of(bias)
            bias = (rw.const("bias_float", bd.astype(np.float32)) if bd is not None else
                    _insert(rw, "Cast", [bias], "bias_float", _v(rw, 13), {"to": dtypes.FLOAT},
                            dtype=dtypes.FLOAT))
    steps: list[tuple[str, list]] = [("MatMul", [a, w])]
    if bias is not None:
        steps.append(("Add", [None, bias]))
    if half:
        steps.append(("Cast", [None]))
    prev: Value | None = None
    for idx, (op, ins) in enumerate(steps):
        ins = [prev if v is None else v for v in ins]
        attrs = {"to": dtypes.FLOAT16} if op == "Cast" else {}
        if idx == len(steps) - 1:
            _become(rw, op, ins, attrs)
        else:
            prev = _insert(rw, op, ins, op.lower(), _v(rw, 14), attrs, dtype=dtypes.FLOAT)
    _set_out_dtype(rw, ft)
    return _v(rw, 14)


RULES: dict[str, Rule] = {
    "QLinearAdd": _qlinear_binary("Add"),
    "QLinearMul": _qlinear_binary("Mul"),
    "QLinearSigmoid": _qlinear_unary("Sigmoid"),
    "QLinearLeakyRelu": _qlinear_unary("LeakyRelu", (("alpha", 0.01),)),
    "QLinearWhere": qlinear_where,
    "QLinearConcat": qlinear_concat,
    "QLinearGlobalAveragePool": qlinear_global_average_pool,
    "QLinearAveragePool": qlinear_average_pool,
    "QLinearReduceMean": qlinear_reduce_mean,
    "QLinearSoftmax": qlinear_softmax,
    "QGemm": qgemm,
    "DynamicQuantizeMatMul": dynamic_quantize_matmul,
    "MatMulIntegerToFloat": matmul_integer_to_float,
    "DynamicQuantizeLSTM": dynamic_quantize_lstm,
    "MatMulNBits": matmul_nbits,
}
