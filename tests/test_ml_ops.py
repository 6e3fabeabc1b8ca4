"""The ``ai.onnx.ml`` kernels of ``edgert/runtime/kernels/cpu/ml.py`` against onnxruntime.

Every case is a small ONNX model run through the real pipeline (``convert`` then
``Interpreter``) and in onnxruntime. Labels must match exactly, floats within 1e-5. Where
onnxruntime departs from the ONNX spec (or leaves an output undefined) edgert follows the spec,
and the case builds its expected values from onnxruntime on an equivalent model (the input cast
to a type onnxruntime implements, NONE instead of a post-transform it skips...) plus the spec's
formula; each such case says why. Malformed attributes must raise an edgert error naming the op.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgert.converter import convert
from edgert.errors import DTypeError, EdgeRTError, InputError, KernelError, ShapeError
from edgert.runtime import Interpreter

ML = "ai.onnx.ml"
RTOL = ATOL = 1e-5
POST = ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT")
FLOAT_TYPES = (np.float32, np.float64, np.int64, np.int32)


# ----- helpers ------------------------------------------------------------------------------------
def _map_type(key: int, value: int, sequence: bool = False) -> onnx.TypeProto:
    tp = helper.make_map_type_proto(key, helper.make_tensor_type_proto(value, None))
    return helper.make_sequence_type_proto(tp) if sequence else tp


def _model(op: str, feeds: dict, attrs: dict, n_out: int = 1, opset: int = 3,
           types: dict | None = None, consts: dict | None = None) -> onnx.ModelProto:
    """One ``ai.onnx.ml`` node reading ``feeds`` (then the initializers ``consts``), writing
    ``y0..``. ``types`` overrides an input's TypeProto (maps)."""
    types = types or {}
    consts = consts or {}
    inputs = [helper.make_value_info(n, types[n]) if n in types else
              helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for n, v in feeds.items()]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, [*feeds, *consts], outs, domain=ML, **attrs)
    graph = helper.make_graph([node], "g", inputs, [helper.make_empty_tensor_value_info(o)
                                                    for o in outs],
                              [onnx.numpy_helper.from_array(v, n) for n, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(ML, opset)])
    model.ir_version = 9
    return model


def _edgert(model: onnx.ModelProto, feeds: dict) -> list:
    interp = Interpreter(convert(model, level=0))
    got = interp.run(feeds)
    return [got[name] for name in interp.output_names]


def _ort(model: onnx.ModelProto, feeds: dict) -> list:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _same(got, ref, where: str = "output", tol: float = RTOL) -> None:
    """Arrays: same dtype and shape, labels exact, floats within ``tol`` (NaN equal NaN).
    Lists of dicts (ZipMap): the same keys in the same order, values within ``tol``."""
    if isinstance(ref, list):
        assert isinstance(got, list) and len(got) == len(ref), where
        for k, (g, r) in enumerate(zip(got, ref)):
            assert isinstance(g, dict) and list(g) == list(r), f"{where}[{k}]: {g} != {r}"
            np.testing.assert_allclose([float(v) for v in g.values()], list(r.values()),
                                       rtol=tol, atol=tol, err_msg=f"{where}[{k}]")
        return
    ref = np.asarray(ref)
    assert isinstance(got, np.ndarray), f"{where}: got {type(got).__name__}"
    assert (got.dtype, got.shape) == (ref.dtype, ref.shape), (where, got.dtype, got.shape,
                                                              ref.dtype, ref.shape)
    if ref.dtype.kind == "f":
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol, err_msg=where)
    else:
        np.testing.assert_array_equal(got, ref, err_msg=where)


def _check(op: str, feeds: dict, attrs: dict, n_out: int = 1, opset: int = 3,
           types: dict | None = None, consts: dict | None = None, tol: float = RTOL) -> list:
    """edgert and onnxruntime on the same model: every output the same."""
    model = _model(op, feeds, attrs, n_out, opset, types, consts)
    got = _edgert(model, feeds)
    ref = _ort(model, feeds)
    for i, (g, r) in enumerate(zip(got, ref)):
        _same(g, r, f"{op} output {i}", tol)
    return got


def _rand(shape, dtype=np.float32, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "i":
        return rng.integers(-5, 6, size=shape).astype(dtype)
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _probit(p: np.ndarray) -> np.ndarray:
    """sqrt(2) erfinv(2p - 1) with Winitzki's inverse error function (a = 0.147), the
    approximation onnxruntime uses."""
    x = 2.0 * np.asarray(p, np.float64) - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ln = np.log((1.0 - x) * (1.0 + x))
        a = 2.0 / (np.pi * 0.147) + 0.5 * ln
        return (np.sqrt(2.0) * np.sign(x) * np.sqrt(-a + np.sqrt(a * a - ln / 0.147))
                ).astype(np.float32)


def _transform(y: np.ndarray, post: str) -> np.ndarray:
    """The spec's post-transform of single-column scores (where onnxruntime skips it)."""
    y = y.astype(np.float64)
    if post == "LOGISTIC":
        out = 1.0 / (1.0 + np.exp(-y))
    elif post in ("SOFTMAX", "SOFTMAX_ZERO"):
        out = np.ones_like(y)  # exp(y - max) / sum over one column (y is never 0 here)
    elif post == "PROBIT":
        out = _probit(y)
    else:
        out = y
    return out.astype(np.float32)


def _raises(model: onnx.ModelProto, feeds: dict, cls: type[EdgeRTError], op: str) -> None:
    """The model fails with an edgert error of ``cls`` naming ``op``, at convert, at prepare
    or (for run-time values) at run."""
    with pytest.raises(EdgeRTError) as info:
        _edgert(model, feeds)
    assert isinstance(info.value, cls), repr(info.value)
    assert op in str(info.value), str(info.value)


# ----- linear models ------------------------------------------------------------------------------
def _linear_attrs(k_rows: int, n_labels: int, f: int, strings: bool, post: str, seed: int):
    rng = np.random.default_rng(seed)
    labels = ({"classlabels_strings": [f"c{i}" for i in range(n_labels)]} if strings else
              {"classlabels_ints": [int(v) for v in rng.choice(100, n_labels, replace=False)]})
    return {"coefficients": rng.standard_normal(k_rows * f).tolist(),
            "intercepts": rng.standard_normal(k_rows).tolist(), "post_transform": post, **labels}


@pytest.mark.parametrize("post", POST)
@pytest.mark.parametrize("strings", [False, True])
@pytest.mark.parametrize("rows,labels", [(3, 3), (2, 2), (4, 4)])
def test_linear_classifier(post, strings, rows, labels):
    x = _rand((7, 5), seed=rows)
    _check("LinearClassifier", {"x": x}, _linear_attrs(rows, labels, 5, strings, post, rows), 2)


@pytest.mark.parametrize("post", POST)
@pytest.mark.parametrize("strings", [False, True])
def test_linear_classifier_one_row_binary(post, strings):
    """One coefficient row, two labels: onnxruntime's two score columns (module docstring)."""
    x = _rand((9, 4), seed=3)
    attrs = _linear_attrs(1, 2, 4, strings, post, 4)
    if post != "PROBIT":
        _check("LinearClassifier", {"x": x}, attrs, 2)
        return
    # onnxruntime writes PROBIT's scores packed into the first half of Z (the rest is garbage):
    # expected [-probit(s), probit(s)] from the raw score s of the NONE model
    labels, z = _ort(_model("LinearClassifier", {"x": x}, {**attrs, "post_transform": "NONE"},
                            2), {"x": x})
    p = _probit(z[:, 1])
    got = _edgert(_model("LinearClassifier", {"x": x}, attrs, 2), {"x": x})
    _same(got[0], labels, "labels")
    _same(got[1], np.stack([-p, p], axis=1), "scores")


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32])
def test_linear_classifier_input_types(dtype):
    x = _rand((6, 3), dtype, seed=5)
    _check("LinearClassifier", {"x": x}, _linear_attrs(3, 3, 3, False, "SOFTMAX", 6), 2)


def test_linear_classifier_one_dimensional_input_is_one_row():
    _check("LinearClassifier", {"x": _rand((4,), seed=7)},
           _linear_attrs(3, 3, 4, True, "LOGISTIC", 8), 2)


def test_linear_classifier_without_intercepts_means_zero():
    """(onnxruntime takes the class count from the intercepts: give it explicit zeros)"""
    x = _rand((5, 3), seed=9)
    attrs = _linear_attrs(3, 3, 3, False, "NONE", 9)
    ref = _ort(_model("LinearClassifier", {"x": x}, {**attrs, "intercepts": [0.0] * 3}, 2),
               {"x": x})
    del attrs["intercepts"]
    for g, r in zip(_edgert(_model("LinearClassifier", {"x": x}, attrs, 2), {"x": x}), ref):
        _same(g, r)


@pytest.mark.parametrize("post", POST)
@pytest.mark.parametrize("targets", [1, 3])
def test_linear_regressor(post, targets):
    x = _rand((8, 4), seed=targets)
    rng = np.random.default_rng(targets)
    attrs = {"coefficients": (rng.standard_normal(4 * targets) * 0.3).tolist(),
             "intercepts": (rng.standard_normal(targets) * 0.3).tolist(),
             "targets": targets, "post_transform": post}
    if targets > 1 or post in ("NONE", "PROBIT"):
        _check("LinearRegressor", {"x": x}, attrs)
        return
    # spec: the post-transform applies to the regression output; onnxruntime skips LOGISTIC,
    # SOFTMAX and SOFTMAX_ZERO for one target: expected = the transform of its NONE output
    (y,) = _ort(_model("LinearRegressor", {"x": x}, {**attrs, "post_transform": "NONE"}),
                {"x": x})
    _same(_edgert(_model("LinearRegressor", {"x": x}, attrs), {"x": x})[0], _transform(y, post))


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32])
def test_linear_regressor_input_types(dtype):
    """(onnxruntime implements float only: the reference is its run on the input as float)"""
    x = _rand((5, 3), dtype, seed=11)
    attrs = {"coefficients": [0.5, -1.0, 0.25, 1.0, 2.0, -0.5], "intercepts": [0.1, -0.2],
             "targets": 2}
    (ref,) = _ort(_model("LinearRegressor", {"x": x.astype(np.float32)}, attrs),
                  {"x": x.astype(np.float32)})
    _same(_edgert(_model("LinearRegressor", {"x": x}, attrs), {"x": x})[0], ref)


def test_linear_regressor_one_dimensional_input_and_no_intercepts():
    _check("LinearRegressor", {"x": _rand((3,), seed=12)}, {"coefficients": [1.0, -2.0, 0.5]})


# ----- support vector machines --------------------------------------------------------------------
def _svc_attrs(kernel: str, k: int, f: int, proba: bool, strings: bool, post: str, seed: int):
    rng = np.random.default_rng(seed)
    per_class = rng.integers(1, 4, size=k)
    v = int(per_class.sum())
    pairs = k * (k - 1) // 2
    attrs = {
        "kernel_type": kernel, "kernel_params": [0.4, 0.3, 3.0], "post_transform": post,
        "vectors_per_class": per_class.tolist(),
        "support_vectors": rng.standard_normal(v * f).tolist(),
        "coefficients": rng.standard_normal((k - 1) * v).tolist(),
        "rho": (rng.standard_normal(pairs) * 0.5).tolist(),
    }
    attrs.update({"classlabels_strings": [f"s{i}" for i in range(k)]} if strings else
                 {"classlabels_ints": list(range(10, 10 + k))})
    if proba:
        attrs["prob_a"] = (-rng.uniform(0.5, 3.0, pairs)).tolist()
        attrs["prob_b"] = (rng.standard_normal(pairs) * 0.3).tolist()
    return attrs


SVC_CASES = [
    *((kernel, k, proba, POST[i % 5])
      for i, (kernel, k, proba) in enumerate(itertools.product(
          ("LINEAR", "POLY", "RBF", "SIGMOID"), (2, 3, 4), (False, True)))),
    *(("RBF", k, proba, post) for k in (2, 3) for proba in (False, True) for post in POST),
]


@pytest.mark.parametrize("kernel,k,proba,post", SVC_CASES)
def test_svm_classifier(kernel, k, proba, post):
    seed = len(kernel) * 31 + k * 7 + proba * 3 + POST.index(post)
    x = _rand((12, 3), seed=seed)
    attrs = _svc_attrs(kernel, k, 3, proba, seed % 2 == 1, post, seed)
    if not (k == 2 and not proba and post == "PROBIT"):
        _check("SVMClassifier", {"x": x}, attrs, 2)
        return
    # two classes, no probabilities, PROBIT: onnxruntime writes probit(s) in column 0 and
    # leaves column 1 unset; expected [-probit(s), probit(s)] from NONE's [-s, s]
    labels, z = _ort(_model("SVMClassifier", {"x": x}, {**attrs, "post_transform": "NONE"}, 2),
                     {"x": x})
    p = _probit(z[:, 1])
    got = _edgert(_model("SVMClassifier", {"x": x}, attrs, 2), {"x": x})
    _same(got[0], labels, "labels")
    _same(got[1], np.stack([-p, p], axis=1), "scores")


@pytest.mark.parametrize("k,post", [(2, p) for p in POST] + [(3, "NONE"), (4, "SOFTMAX")])
def test_svm_classifier_linear_mode(k, post):
    """No support vectors: one coefficient row per class, rho[0] added to every score."""
    rng = np.random.default_rng(k)
    attrs = {"coefficients": rng.standard_normal(k * 3).tolist(), "rho": [0.2],
             "kernel_params": [0.0, 0.0, 0.0], "classlabels_ints": list(range(k)),
             "post_transform": post}
    _check("SVMClassifier", {"x": _rand((10, 3), seed=k)}, attrs, 2)


def test_svm_classifier_linear_mode_non_negative_weights():
    """onnxruntime's two-class rule with non-negative weights: labels[1] when the top score is
    at least 0.5."""
    attrs = {"coefficients": [0.5, 0.1, 0.3, 0.2], "rho": [-0.1], "kernel_params": [0, 0, 0.0],
             "classlabels_strings": ["no", "yes"]}
    x = np.array([[1.0, 0.2], [0.1, 0.1], [0.0, 2.0], [-1.0, -1.0]], np.float32)
    _check("SVMClassifier", {"x": x}, attrs, 2)


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32])
def test_svm_classifier_input_types(dtype):
    x = _rand((6, 3), dtype, seed=13)
    _check("SVMClassifier", {"x": x}, _svc_attrs("RBF", 3, 3, True, False, "NONE", 14), 2)


def test_svm_classifier_one_dimensional_input_is_one_row():
    _check("SVMClassifier", {"x": _rand((3,), seed=15)},
           _svc_attrs("POLY", 3, 3, False, True, "NONE", 16), 2)


def _svr_attrs(kernel: str, n: int, f: int, seed: int, **extra):
    rng = np.random.default_rng(seed)
    attrs = {"kernel_type": kernel, "kernel_params": [0.3, 0.2, 2.0], "n_supports": n,
             "coefficients": rng.standard_normal(n if n else f).tolist(),
             "rho": [float(rng.standard_normal()) * 0.2], **extra}
    if n:
        attrs["support_vectors"] = rng.standard_normal(n * f).tolist()
    return attrs


@pytest.mark.parametrize("kernel", ["LINEAR", "POLY", "RBF", "SIGMOID"])
@pytest.mark.parametrize("supports", [0, 5])
@pytest.mark.parametrize("one_class", [0, 1])
def test_svm_regressor(kernel, supports, one_class):
    x = _rand((9, 4), seed=supports + one_class)
    _check("SVMRegressor", {"x": x}, _svr_attrs(kernel, supports, 4, 17, one_class=one_class))
    _check("SVMRegressor", {"x": x[0]}, _svr_attrs(kernel, supports, 4, 17))  # one row


@pytest.mark.parametrize("post", POST[1:])
def test_svm_regressor_post_transform(post):
    """spec: the post-transform applies to the score; onnxruntime ignores it: expected = the
    transform of its NONE output."""
    x = _rand((9, 4), seed=18, scale=0.3)
    attrs = _svr_attrs("RBF", 4, 4, 19)
    if post == "PROBIT":  # scores inside (0, 1), where probit is defined
        attrs["coefficients"] = [0.1, 0.05, 0.1, 0.05]
        attrs["rho"] = [0.3]
    (y,) = _ort(_model("SVMRegressor", {"x": x}, attrs), {"x": x})
    got = _edgert(_model("SVMRegressor", {"x": x}, {**attrs, "post_transform": post}), {"x": x})
    _same(got[0], _transform(y, post))


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32])
def test_svm_regressor_input_types(dtype):
    """(onnxruntime implements float only: the reference is its run on the input as float)"""
    x = _rand((6, 3), dtype, seed=20)
    attrs = _svr_attrs("RBF", 4, 3, 21)
    (ref,) = _ort(_model("SVMRegressor", {"x": x.astype(np.float32)}, attrs),
                  {"x": x.astype(np.float32)})
    _same(_edgert(_model("SVMRegressor", {"x": x}, attrs), {"x": x})[0], ref)


# ----- element-wise preprocessing -----------------------------------------------------------------
@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
@pytest.mark.parametrize("dtype", FLOAT_TYPES)
@pytest.mark.parametrize("shape", [(5, 4), (4,)])
def test_normalizer(norm, dtype, shape):
    x = _rand(shape, dtype, seed=len(shape))
    x.reshape(-1)[: shape[-1]] = 0  # a zero row (MAX: a row of zero maximum) stays as it is
    _check("Normalizer", {"x": x}, {"norm": norm})


@pytest.mark.parametrize("dtype", FLOAT_TYPES)
@pytest.mark.parametrize("per_feature", [False, True])
@pytest.mark.parametrize("opset", [1, 5])
def test_scaler(dtype, per_feature, opset):
    x = _rand((6, 3), dtype, seed=22)
    attrs = ({"offset": [0.5, -1.0, 2.0], "scale": [2.0, 0.5, -1.5]} if per_feature else
             {"offset": [0.25], "scale": [3.0]})
    _check("Scaler", {"x": x}, attrs, opset=opset)


def test_scaler_one_dimensional_and_rank_three():
    _check("Scaler", {"x": _rand((3,), seed=23)}, {"offset": [1.0, 2.0, 3.0], "scale": [1, 2, 3.0]})
    _check("Scaler", {"x": _rand((2, 3, 4), seed=24)}, {"offset": [1.0], "scale": [0.5]})
    # per-feature values along the last axis: onnxruntime indexes them by dims[1] instead, so
    # the reference is its run on the input as [-1, F]
    x = _rand((2, 3, 4), seed=25)
    attrs = {"offset": [1.0, 2.0, 3.0, 4.0], "scale": [0.5, -1.0, 2.0, 1.0]}
    flat = x.reshape(-1, 4)
    (ref,) = _ort(_model("Scaler", {"x": flat}, attrs), {"x": flat})
    _same(_edgert(_model("Scaler", {"x": x}, attrs), {"x": x})[0], ref.reshape(x.shape))


@pytest.mark.parametrize("threshold", [None, 0.5, -1.25])
def test_binarizer(threshold):
    attrs = {} if threshold is None else {"threshold": threshold}
    _check("Binarizer", {"x": _rand((4, 5), seed=26)}, attrs)


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32])
def test_binarizer_other_types(dtype):
    """(onnxruntime implements float only: the reference is its run on the input as float)"""
    x = _rand((3, 4), dtype, seed=27) * (3 if dtype != np.float64 else 1)
    (ref,) = _ort(_model("Binarizer", {"x": x.astype(np.float32)}, {"threshold": 0.5}),
                  {"x": x.astype(np.float32)})
    _same(_edgert(_model("Binarizer", {"x": x}, {"threshold": 0.5}), {"x": x})[0],
          ref.astype(dtype))


def test_binarizer_nan_is_zero():
    """spec: 1 where X > threshold, else 0, so NaN gives 0; onnxruntime rejects NaN: the
    reference is its run with -inf in place of NaN."""
    x = np.array([[np.nan, 0.5, -2.0, 3.0]], np.float32)
    (ref,) = _ort(_model("Binarizer", {"x": x}, {}), {"x": np.nan_to_num(x, nan=-np.inf)})
    _same(_edgert(_model("Binarizer", {"x": x}, {}), {"x": x})[0], ref)


@pytest.mark.parametrize("replaced,per_feature", [(np.nan, True), (np.nan, False), (-1.0, True),
                                                  (0.0, False)])
def test_imputer_floats(replaced, per_feature):
    x = _rand((6, 3), seed=28)
    x[::2, 1] = replaced
    x[1, 0] = replaced
    attrs = {"replaced_value_float": replaced,
             "imputed_value_floats": [9.0, -7.5, 3.25] if per_feature else [4.5]}
    _check("Imputer", {"x": x}, attrs)


@pytest.mark.parametrize("per_feature", [False, True])
def test_imputer_int64(per_feature):
    x = np.array([[1, -1, 3], [-1, -1, 0], [5, 6, -1]], np.int64)
    attrs = {"replaced_value_int64": -1, "imputed_value_int64s": [7, 8, 9] if per_feature else [0]}
    _check("Imputer", {"x": x}, attrs)
    _check("Imputer", {"x": x[1]}, attrs)  # one-dimensional


@pytest.mark.parametrize("dtype,ort_dtype", [(np.float64, np.float32), (np.int32, np.int64)])
def test_imputer_other_types(dtype, ort_dtype):
    """(onnxruntime implements float and int64: the reference is its run on the input as those;
    the rank-3 input takes its per-feature values along the last axis, onnxruntime along dims[1],
    so it runs on the input as [-1, F])"""
    x = np.array([[[1, -1, 3], [-1, 2, 0]], [[5, 6, -1], [-1, -1, -1]]], dtype)
    attrs = ({"replaced_value_float": -1.0, "imputed_value_floats": [0.5, 1.5, 2.5]}
             if x.dtype.kind == "f" else
             {"replaced_value_int64": -1, "imputed_value_int64s": [10, 20, 30]})
    flat = x.reshape(-1, 3).astype(ort_dtype)
    (ref,) = _ort(_model("Imputer", {"x": flat}, attrs), {"x": flat})
    _same(_edgert(_model("Imputer", {"x": x}, attrs), {"x": x})[0], ref.reshape(x.shape)
          .astype(dtype))


# ----- feature extraction -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [*FLOAT_TYPES, object])
@pytest.mark.parametrize("shape", [(7,), (3, 7), (2, 3, 7)])
@pytest.mark.parametrize("const", [False, True])
def test_array_feature_extractor(dtype, shape, const):
    x = _rand(shape, np.float32, seed=29)
    x = x.astype(str).astype(object) if dtype is object else x.astype(dtype)
    idx = np.array([[6, 0, 3, 3]], np.int64) if const else np.array([2, 5], np.int64)
    feeds = {"x": x} if const else {"x": x, "idx": idx}
    consts = {"idx": idx} if const else None
    model = _model("ArrayFeatureExtractor", feeds, {}, consts=consts)
    ref = _ort(model, feeds)
    _same(_edgert(model, feeds)[0], ref[0])


@pytest.mark.parametrize("index", [7, -1])
@pytest.mark.parametrize("const", [False, True])
def test_array_feature_extractor_index_out_of_range(index, const):
    """An index outside [0, F) is an InputError: at prepare when it is a constant, else at run
    (onnxruntime rejects the first, reads out of bounds for the second)."""
    x = _rand((2, 7), seed=30)
    idx = np.array([1, index], np.int64)
    feeds = {"x": x} if const else {"x": x, "idx": idx}
    model = _model("ArrayFeatureExtractor", feeds, {}, consts={"idx": idx} if const else None)
    _raises(model, feeds, InputError, "ArrayFeatureExtractor")


@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6,), (2, 3)])
def test_one_hot_encoder_numbers(dtype, shape):
    """Floats are truncated to integers (2.7 -> 2, -1.5 -> -1) before the lookup."""
    x = np.array([2.7, 5.0, -1.5, 9.0, 2.0, 0.0], np.float64).reshape(shape).astype(dtype)
    _check("OneHotEncoder", {"x": x}, {"cats_int64s": [0, 2, 5, -1, 7]})


def test_one_hot_encoder_int32_and_strings():
    x = np.array([[3, 1], [8, 3]], np.int32)
    attrs = {"cats_int64s": [1, 3, 8, 3]}  # a repeated category: the last position wins
    (ref,) = _ort(_model("OneHotEncoder", {"x": x.astype(np.int64)}, attrs),
                  {"x": x.astype(np.int64)})  # (onnxruntime has no int32 kernel)
    _same(_edgert(_model("OneHotEncoder", {"x": x}, attrs), {"x": x})[0], ref)
    x = np.array(["b", "zz", "a", "c"], dtype=object)
    _check("OneHotEncoder", {"x": x}, {"cats_strings": ["a", "b", "c"], "zeros": 1})


def test_one_hot_encoder_unknown_category_without_zeros():
    x = np.array([1, 4], np.int64)
    _raises(_model("OneHotEncoder", {"x": x}, {"cats_int64s": [1, 2], "zeros": 0}), {"x": x},
            InputError, "OneHotEncoder")


@pytest.mark.parametrize("dtype", FLOAT_TYPES)
@pytest.mark.parametrize("shapes", [[(4, 2), (4, 3)], [(3,), (1, 2), (1, 1)], [(2, 2, 2), (2, 1)]])
def test_feature_vectorizer(dtype, shapes):
    feeds = {f"x{i}": _rand(s, dtype, seed=i) for i, s in enumerate(shapes)}
    sizes = [int(np.prod(s[1:])) if len(s) > 1 else s[0] for s in shapes]
    _check("FeatureVectorizer", feeds, {"inputdimensions": sizes})
    # narrower and wider than the inputs: truncated, zero-padded (as onnxruntime)
    _check("FeatureVectorizer", feeds, {"inputdimensions": [max(n - 1, 0) if i % 2 else n + 2
                                                            for i, n in enumerate(sizes)]})


# ----- category / label mappings ------------------------------------------------------------------
CATS = {"cats_strings": ["cat", "dog", "cow", "dog"], "cats_int64s": [1, 2, 3, 4]}


@pytest.mark.parametrize("defaults", [{}, {"default_int64": 42, "default_string": "none"}])
def test_category_mapper(defaults):
    """A repeated entry: the last one wins (as onnxruntime)."""
    attrs = {**CATS, **defaults}
    _check("CategoryMapper", {"x": np.array([["dog", "cat"], ["emu", "cow"]], object)}, attrs)
    _check("CategoryMapper", {"x": np.array([4, 1, 0, 2, 3, -7], np.int64)}, attrs)


@pytest.mark.parametrize("defaults", [{}, {"default_int64": 7, "default_string": "?"}])
def test_label_encoder_opset1(defaults):
    attrs = {"classes_strings": ["a", "b", "c", "b"], **defaults}
    _check("LabelEncoder", {"x": np.array(["c", "b", "zz", "a"], object)}, attrs, opset=1)
    _check("LabelEncoder", {"x": np.array([[0, 3], [4, -1]], np.int64)}, attrs, opset=1)


_KEYS = {"strings": ["a", "b", "c", "b"], "int64s": [3, -1, 10, -1], "floats": [0.5, -2.0, 7.25,
                                                                                -2.0]}
_VALUES = {"strings": ["x", "y", "z", "w"], "int64s": [30, 40, 50, 60], "floats": [1.5, 2.5, -3.5,
                                                                                   4.5]}
_INPUTS = {"strings": np.array([["b", "a"], ["q", "c"]], object),
           "int64s": np.array([[-1, 3], [4, 10]], np.int64),
           "floats": np.array([[-2.0, 0.5], [3.0, 7.25]], np.float32)}
_DEFAULTS = {"strings": {"default_string": "none"}, "int64s": {"default_int64": -99},
             "floats": {"default_float": 0.125}}


@pytest.mark.parametrize("opset", [2, 3, 4, 5])
@pytest.mark.parametrize("keys,values", list(itertools.product(_KEYS, _VALUES)))
@pytest.mark.parametrize("defaults", [False, True])
def test_label_encoder_lists(opset, keys, values, defaults):
    """LabelEncoder-2 (ML opsets 2, 3) and -4 (opsets 4, 5). Repeated keys: -2 keeps the first
    (onnxruntime; the spec is silent), -4 the last (spec; onnxruntime keeps the first: the
    reference is its run on the keys without the first repeat)."""
    attrs = {f"keys_{keys}": _KEYS[keys], f"values_{values}": _VALUES[values],
             **(_DEFAULTS[values] if defaults else {})}
    x = _INPUTS[keys]
    if opset < 4:
        _check("LabelEncoder", {"x": x}, attrs, opset=opset)
        return
    last = {**attrs, f"keys_{keys}": _KEYS[keys][:1] + _KEYS[keys][2:],
            f"values_{values}": _VALUES[values][:1] + _VALUES[values][2:]}
    (ref,) = _ort(_model("LabelEncoder", {"x": x}, last, opset=opset), {"x": x})
    _same(_edgert(_model("LabelEncoder", {"x": x}, attrs, opset=opset), {"x": x})[0], ref)


def _tensor(name: str, arr: np.ndarray) -> onnx.TensorProto:
    if arr.dtype == object:
        return helper.make_tensor(name, TensorProto.STRING, arr.shape, [s.encode() for s in arr])
    return onnx.numpy_helper.from_array(arr, name)


TENSOR_CASES = [  # (keys, values, default, ort has the kernel)
    (np.array(["a", "b", "c"], object), np.array([1, 2, 3], np.int16), np.array([-5], np.int16),
     True),
    (np.array([1.5, -2.0, 4.0]), np.array([0.5, 1.5, 2.5]), np.array([-1.0]), True),
    (np.array([1.5, -2.0, 4.0]), np.array(["p", "q", "r"], object), np.array(["?"], object),
     True),
    (np.array([7, 8, 9], np.int64), np.array([0.1, 0.2, 0.3]), np.array([9.5]), True),
    (np.array([7, 8, 9], np.int32), np.array([70, 80, 90], np.int32), np.array([0], np.int32),
     False),
]


@pytest.mark.parametrize("keys,values,default,ort_has", TENSOR_CASES)
def test_label_encoder_tensor_attributes(keys, values, default, ort_has):
    x = keys[[2, 0, 1, 1]].copy()
    x[3] = "zz" if keys.dtype == object else keys.dtype.type(-3)
    attrs = {"keys_tensor": _tensor("k", keys), "values_tensor": _tensor("v", values),
             "default_tensor": _tensor("d", default)}
    if ort_has:
        _check("LabelEncoder", {"x": x}, attrs, opset=4)
        return
    # (no onnxruntime kernel for this type pair: the expected values are the table itself)
    expected = values[[2, 0, 1]].tolist() + [default[0]]
    _same(_edgert(_model("LabelEncoder", {"x": x}, attrs, opset=4), {"x": x})[0],
          np.array(expected, values.dtype))


def test_label_encoder_nan_keys():
    """opset 4 (spec and onnxruntime): a NaN key matches every NaN and -0.0 matches 0.0.
    opset 2 (spec): keys compare bit for bit, so only the key's own NaN and 0.0 match;
    onnxruntime never matches a NaN there: the reference is the spec's table."""
    nan2 = np.frombuffer(np.array([0x7FC00001], np.uint32).tobytes(), np.float32)[0]
    x = np.array([np.nan, nan2, -0.0, 0.0, 1.0], np.float32)
    attrs = {"keys_floats": [float("nan"), 0.0], "values_int64s": [5, 6], "default_int64": -1}
    _check("LabelEncoder", {"x": x}, attrs, opset=4)
    got = _edgert(_model("LabelEncoder", {"x": x}, attrs, opset=2), {"x": x})[0]
    _same(got, np.array([5, -1, -1, 6, -1], np.int64))


# ----- maps ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("strings", [False, True])
@pytest.mark.parametrize("shape", [(4, 4), (4,)])
def test_zipmap(strings, shape):
    """Keys in ascending order, the last of a repeated label winning (onnxruntime's std::map)."""
    attrs = ({"classlabels_strings": ["x", "a", "m", "a"]} if strings else
             {"classlabels_int64s": [7, -2, 30, 7]})
    _check("ZipMap", {"x": _rand(shape, seed=31)}, attrs, opset=1, tol=1e-6)


STRING_FLOAT = _map_type(TensorProto.STRING, TensorProto.FLOAT)
INT_FLOAT = _map_type(TensorProto.INT64, TensorProto.FLOAT)


@pytest.mark.parametrize("string_keys", [False, True])
def test_dict_vectorizer(string_keys):
    """Keys outside the vocabulary are ignored; a repeated vocabulary entry is filled twice."""
    if string_keys:
        attrs, tp = {"string_vocabulary": ["a", "b", "c", "a"]}, STRING_FLOAT
        maps = [{"a": 1.5, "zz": 3.0, "c": 2.0}, {"b": -1.0}]
    else:
        attrs, tp = {"int64_vocabulary": [3, 5, 1, 3]}, INT_FLOAT
        maps = [{1: 1.5, 7: 3.0, 3: 2.0}, {5: -1.0}]
    for d in maps:
        _check("DictVectorizer", {"x": d}, attrs, types={"x": tp})
    # an empty map (which onnxruntime refuses) is a row of zeros
    empty = _edgert(_model("DictVectorizer", {"x": {}}, attrs, types={"x": tp}), {"x": {}})
    _same(empty[0], np.zeros((1, 4), np.float32))
    # a sequence of maps (which onnxruntime does not take) is one row per map
    seq = _map_type(tp.map_type.key_type, TensorProto.FLOAT, sequence=True)
    rows = [_ort(_model("DictVectorizer", {"x": d}, attrs, types={"x": tp}), {"x": d})[0]
            for d in maps]
    got = _edgert(_model("DictVectorizer", {"x": maps}, attrs, types={"x": seq}), {"x": maps})
    _same(got[0], np.concatenate(rows))


@pytest.mark.parametrize("value", [TensorProto.DOUBLE, TensorProto.INT64, TensorProto.STRING])
def test_dict_vectorizer_other_value_types(value):
    """(onnxruntime's Python API feeds only float map values: the expected rows are written
    out)"""
    vals = {TensorProto.DOUBLE: [0.25, -4.0], TensorProto.INT64: [3, -9],
            TensorProto.STRING: ["u", "v"]}[value]
    d = {"b": vals[0], "q": vals[1], "a": vals[1]}
    got = _edgert(_model("DictVectorizer", {"x": d}, {"string_vocabulary": ["a", "b", "c"]},
                         types={"x": _map_type(TensorProto.STRING, value)}), {"x": d})
    dtype = helper.tensor_dtype_to_np_dtype(value)
    _same(got[0], np.array([[vals[1], vals[0], "" if value == TensorProto.STRING else 0]],
                           dtype))


@pytest.mark.parametrize("cast_to", ["TO_FLOAT", "TO_INT64", "TO_STRING"])
@pytest.mark.parametrize("form", ["DENSE", "SPARSE"])
def test_cast_map(cast_to, form):
    d = {3: 1.5, 1: -2.7, 5: 4.0, 0: 0.125}
    _check("CastMap", {"x": d}, {"cast_to": cast_to, "map_form": form, "max_map": 7},
           types={"x": INT_FLOAT}, opset=1)


def test_cast_map_string_values():
    """(onnxruntime's Python API cannot feed map(int64, string): the expected rows are written
    out: keys in order, strings parsed, SPARSE pads with "0.f" like onnxruntime)"""
    d = {4: "2.5", 1: "-3", 2: "x7"}
    tp = _map_type(TensorProto.INT64, TensorProto.STRING)

    def run(attrs):
        return _edgert(_model("CastMap", {"x": d}, attrs, types={"x": tp}, opset=1), {"x": d})[0]

    _same(run({"cast_to": "TO_STRING", "map_form": "SPARSE", "max_map": 5}),
          np.array([["0.f", "-3", "x7", "0.f", "2.5"]], object))
    d.pop(2)
    _same(run({"cast_to": "TO_FLOAT"}), np.array([[-3.0, 2.5]], np.float32))
    _same(run({"cast_to": "TO_STRING"}), np.array([["-3", "2.5"]], object))
    with pytest.raises(InputError, match="CastMap"):
        run({"cast_to": "TO_INT64"})  # "2.5" is not an integer


def test_cast_map_sparse_key_outside_max_map():
    """spec: a SPARSE key cannot exceed max_map - 1 (onnxruntime drops it silently)."""
    d = {1: 1.0, 9: 2.0}
    _raises(_model("CastMap", {"x": d}, {"map_form": "SPARSE", "max_map": 4},
                   types={"x": INT_FLOAT}, opset=1), {"x": d}, InputError, "CastMap")


# ----- models from scikit-learn -------------------------------------------------------------------
def _sklearn_case(name: str):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler
    from sklearn.svm import SVC, SVR, LinearSVC, OneClassSVM

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    models = {
        "logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y),
        "logistic_binary": lambda: LogisticRegression().fit(x, y == 1),
        "normalized": lambda: make_pipeline(Normalizer(), LogisticRegression()).fit(x, y),
        "linear_svc": lambda: LinearSVC().fit(x, y),
        "svc_proba": lambda: SVC(probability=True, random_state=0).fit(x, y),
        "svc_poly": lambda: SVC(kernel="poly", degree=2).fit(x, y),
        "svr": lambda: SVR().fit(x[:, :3], x[:, 3]),
        "linear_regression": lambda: LinearRegression().fit(x[:, :3], x[:, 3]),
        "one_class": lambda: OneClassSVM(gamma=0.5).fit(x),
    }
    cols = 3 if name in ("svr", "linear_regression") else 4
    return models[name](), x[::7, :cols].copy()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # SVC(probability=True), sklearn 1.9
@pytest.mark.parametrize("name", ["logistic", "logistic_binary", "normalized", "linear_svc",
                                  "svc_proba",
                                  "svc_poly", "svr", "linear_regression", "one_class"])
def test_sklearn_models(name):
    """Whole skl2onnx exports (Scaler, Normalizer, LinearClassifier, SVMClassifier,
    SVMRegressor, ZipMap... and default-domain ops) against onnxruntime."""
    pytest.importorskip("sklearn")
    to_onnx = pytest.importorskip("skl2onnx").to_onnx
    est, x = _sklearn_case(name)
    model = to_onnx(est, x[:1], target_opset={"": 17, ML: 3})
    feeds = {model.graph.input[0].name: x}
    interp = Interpreter(convert(model, level=0))
    got = interp.run(feeds)
    for out, ref in zip(model.graph.output, _ort(model, feeds)):
        _same(got[out.name], ref, out.name)


# ----- malformed models ---------------------------------------------------------------------------
X23 = np.zeros((2, 3), np.float32)
SVC_OK = _svc_attrs("RBF", 3, 3, True, False, "NONE", 1)
BAD = [
    ("LinearClassifier", {"coefficients": [1.0] * 7, "classlabels_ints": [0, 1]}, ShapeError),
    ("LinearClassifier", {"coefficients": [1.0] * 9, "intercepts": [0.0, 1.0],
                          "classlabels_ints": [0, 1, 2]}, ShapeError),
    ("LinearClassifier", {"coefficients": [1.0] * 9, "classlabels_ints": [0, 1]}, ShapeError),
    ("LinearClassifier", {"coefficients": [1.0] * 6, "classlabels_ints": [0, 1],
                          "classlabels_strings": ["a", "b"]}, KernelError),
    ("LinearClassifier", {"coefficients": [1.0] * 3, "classlabels_ints": [0]}, KernelError),
    ("LinearClassifier", {"coefficients": [1.0] * 6, "classlabels_ints": [0, 1],
                          "post_transform": "EXP"}, KernelError),
    ("LinearRegressor", {"coefficients": [1.0] * 6, "targets": 2, "intercepts": [1.0]},
     KernelError),
    ("LinearRegressor", {"coefficients": [1.0] * 4}, ShapeError),
    ("LinearRegressor", {"coefficients": [1.0] * 3, "targets": 0}, KernelError),
    ("SVMClassifier", {**SVC_OK, "support_vectors": SVC_OK["support_vectors"][:-1]}, ShapeError),
    ("SVMClassifier", {**SVC_OK, "coefficients": SVC_OK["coefficients"][1:]}, KernelError),
    ("SVMClassifier", {**SVC_OK, "rho": [0.0]}, KernelError),
    ("SVMClassifier", {**SVC_OK, "prob_b": [0.0]}, KernelError),
    ("SVMClassifier", {**SVC_OK, "vectors_per_class": [1, 2]}, KernelError),
    ("SVMClassifier", {**SVC_OK, "kernel_type": "CUBIC"}, KernelError),
    ("SVMClassifier", {**SVC_OK, "kernel_params": [0.1, 0.2]}, KernelError),
    ("SVMClassifier", {"coefficients": [1.0] * 6, "rho": [0.0, 1.0], "classlabels_ints": [0, 1]},
     KernelError),
    ("SVMRegressor", _svr_attrs("RBF", 4, 3, 0, n_supports=3), KernelError),
    ("SVMRegressor", {**_svr_attrs("RBF", 4, 3, 0), "rho": [0.0, 1.0]}, KernelError),
    ("SVMRegressor", _svr_attrs("RBF", 4, 2, 0), ShapeError),
    ("SVMRegressor", _svr_attrs("RBF", 4, 3, 0, one_class=1, post_transform="LOGISTIC"),
     KernelError),
    ("Scaler", {"scale": [1.0, 2.0], "offset": [0.0]}, KernelError),
    ("Scaler", {"scale": [1.0, 2.0], "offset": [0.0, 1.0]}, ShapeError),
    ("Scaler", {"offset": [0.0]}, KernelError),
    ("Imputer", {"imputed_value_floats": [1.0], "imputed_value_int64s": [1]}, KernelError),
    ("Imputer", {"imputed_value_int64s": [1]}, DTypeError),
    ("Imputer", {"imputed_value_floats": [1.0, 2.0]}, ShapeError),
    ("Normalizer", {"norm": "L3"}, KernelError),
    ("Normalizer", {}, ShapeError),  # (a rank-3 input, below)
    ("OneHotEncoder", {"zeros": 1}, KernelError),
    ("OneHotEncoder", {"cats_strings": ["a"]}, DTypeError),
    ("LabelEncoder", {"keys_floats": [1.0, 2.0], "values_int64s": [1]}, KernelError),
    ("LabelEncoder", {"keys_floats": [1.0], "keys_int64s": [1], "values_int64s": [1]},
     KernelError),
    ("LabelEncoder", {"keys_int64s": [1], "values_int64s": [1]}, DTypeError),
    ("FeatureVectorizer", {"inputdimensions": [3, 1]}, KernelError),
    ("ZipMap", {"classlabels_int64s": [1, 2]}, ShapeError),
    ("ArrayFeatureExtractor", {}, InputError),
    ("CategoryMapper", {"cats_strings": ["a", "b"], "cats_int64s": [1]}, KernelError),
]


@pytest.mark.parametrize("op,attrs,error", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_malformed_attributes_raise_an_edgert_error(op, attrs, error):
    consts = {"idx": np.array([0, 3], np.int64)} if op == "ArrayFeatureExtractor" else None
    x = X23[None] if error is ShapeError and op == "Normalizer" else X23
    _raises(_model(op, {"x": x}, attrs, n_out=2 if "Classifier" in op else 1, consts=consts),
            {"x": x}, error, op)


@pytest.mark.parametrize("op,attrs,error", [
    ("LabelEncoder", {"keys_tensor": _tensor("k", np.array([1, 2], np.int64)),
                      "values_int64s": [1, 2]}, KernelError),  # a tensor attribute in opset 2
    ("LabelEncoder", {"keys_int64s": [1], "values_int64s": [1],
                      "default_tensor": _tensor("d", np.array([1.5]))}, KernelError),
    ("CastMap", {"cast_to": "TO_BOOL"}, KernelError),
    ("DictVectorizer", {"string_vocabulary": ["a"], "int64_vocabulary": [1]}, KernelError),
    ("DictVectorizer", {"int64_vocabulary": [1, 2]}, DTypeError),  # string keys
])
def test_malformed_label_and_map_ops(op, attrs, error):
    if op in ("CastMap", "DictVectorizer"):
        feeds, types, opset = {"x": {"a": 1.0}}, {"x": STRING_FLOAT}, 1
        if op == "CastMap":
            feeds, types = {"x": {1: 1.0}}, {"x": INT_FLOAT}
    else:
        feeds, types = {"x": np.array([1, 2], np.int64)}, None
        opset = 4 if "default_tensor" in attrs else 2
    _raises(_model(op, feeds, attrs, types=types, opset=opset), feeds, error, op)
