"""Whole scikit-learn pipelines exported by skl2onnx with its default options (ZipMap
probabilities, several typed inputs, the default optimizer level), and LightGBM / XGBoost through
onnxmltools where those are installed, converted by edgert and compared with onnxruntime: labels
equal, probabilities within 1e-5."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest

import edgert
from edgert.runtime import Interpreter

skl2onnx = pytest.importorskip("skl2onnx")
sklearn = pytest.importorskip("sklearn")

ML_OPSETS = {"": 17, "ai.onnx.ml": 3}


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _compare(model, feeds, threads=1):
    ref = _ort(model, feeds)
    got = Interpreter(edgert.convert(model), num_threads=threads).run(feeds)
    assert set(got) == set(ref)
    for name, r in ref.items():
        g = got[name]
        if isinstance(r, list):  # ZipMap: one dict per row
            assert isinstance(g, list) and len(g) == len(r)
            for gr, rr in zip(g, r):
                assert list(gr) == list(rr)  # the same labels, in the same order
                np.testing.assert_allclose([float(v) for v in gr.values()], list(rr.values()),
                                           rtol=1e-5, atol=1e-5)
        elif r.dtype.kind in "iuUSO":
            np.testing.assert_array_equal(np.asarray(g).astype(r.dtype), r)
        else:
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def _classification(classes=3, rows=400, features=10):
    from sklearn.datasets import make_classification

    x, y = make_classification(rows, features, n_informative=6, n_classes=classes,
                               random_state=0)
    return x.astype(np.float32), y


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_scaler_and_logistic_regression_with_zipmap():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _classification()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    onx = skl2onnx.to_onnx(model, x[:1], target_opset=ML_OPSETS)
    assert onx.graph.node[-1].op_type == "ZipMap"
    _compare(onx, {"X": x[:50]})


@pytest.mark.parametrize("threads", [1, 2])
def test_random_forest_with_default_options(threads):
    from sklearn.ensemble import RandomForestClassifier

    x, y = _classification()
    labels = np.array(["ant", "bee", "cat"])[y]  # string labels: ZipMap keyed by strings
    model = RandomForestClassifier(40, random_state=0).fit(x, labels)
    onx = skl2onnx.to_onnx(model, x[:1], target_opset=ML_OPSETS)
    _compare(onx, {"X": x}, threads)


def test_gradient_boosting_and_svc_with_probabilities():
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.svm import SVC

    x, y = _classification(classes=2)
    for model in (GradientBoostingClassifier(n_estimators=30, random_state=0).fit(x, y),
                  SVC(probability=True, random_state=0).fit(x[:200], y[:200])):
        onx = skl2onnx.to_onnx(model, x[:1], target_opset=ML_OPSETS)
        _compare(onx, {"X": x[:100]})


def test_column_transformer_on_mixed_columns():
    """Numeric columns scaled, a string column one-hot encoded, a categorical integer column
    one-hot encoded, then a classifier: three typed graph inputs."""
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    n = 300
    num = rng.normal(size=(n, 3)).astype(np.float32)
    city = rng.choice(["paris", "oslo", "lima", "rome"], size=(n, 1)).astype(object)
    level = rng.integers(0, 4, size=(n, 1)).astype(np.int64)
    y = ((num[:, 0] > 0) ^ (city[:, 0] == "oslo")).astype(np.int64) + (level[:, 0] > 2)
    import pandas as pd  # skl2onnx's ColumnTransformer takes named columns

    frame = pd.DataFrame({"a": num[:, 0], "b": num[:, 1], "c": num[:, 2], "city": city[:, 0],
                          "level": level[:, 0]})
    pre = ColumnTransformer([
        ("num", StandardScaler(), ["a", "b", "c"]),
        ("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ("level", OneHotEncoder(handle_unknown="ignore"), ["level"]),
    ])
    model = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))]).fit(frame, y)
    onx = skl2onnx.convert_sklearn(
        model, initial_types=[("a", FloatTensorType([None, 1])), ("b", FloatTensorType([None, 1])),
                              ("c", FloatTensorType([None, 1])),
                              ("city", StringTensorType([None, 1])),
                              ("level", Int64TensorType([None, 1]))],
        target_opset=ML_OPSETS)
    feeds = {"a": num[:, :1], "b": num[:, 1:2], "c": num[:, 2:3], "city": city,
             "level": level}
    feeds["city"][5, 0] = "tokyo"  # unknown category: all-zero one-hot
    _compare(onx, feeds)


def test_lightgbm_through_onnxmltools():
    lightgbm = pytest.importorskip("lightgbm")
    onnxmltools = pytest.importorskip("onnxmltools")
    from onnxmltools.convert.common.data_types import FloatTensorType

    x, y = _classification()
    model = lightgbm.LGBMClassifier(n_estimators=40, verbose=-1).fit(x, y)
    onx = onnxmltools.convert_lightgbm(model, initial_types=[("X", FloatTensorType([None, 10]))],
                                       target_opset=15)
    _compare(onx, {"X": x})


def test_xgboost_through_onnxmltools():
    xgboost = pytest.importorskip("xgboost")
    onnxmltools = pytest.importorskip("onnxmltools")
    from onnxmltools.convert.common.data_types import FloatTensorType

    x, y = _classification()
    model = xgboost.XGBClassifier(n_estimators=30, max_depth=4).fit(x, y)
    onx = onnxmltools.convert_xgboost(model, initial_types=[("X", FloatTensorType([None, 10]))],
                                      target_opset=15)
    _compare(onx, {"X": x})


def test_edgert_optimize_writes_ml_models_onnxruntime_runs(tmp_path):
    """`edgert optimize` keeps ai.onnx.ml nodes and map types in the ONNX it writes."""
    from sklearn.ensemble import RandomForestClassifier

    from edgert.cli import main

    x, y = _classification()
    model = RandomForestClassifier(10, random_state=0).fit(x, y)
    onx = skl2onnx.to_onnx(model, x[:1], target_opset=ML_OPSETS)
    src, dst = tmp_path / "rf.onnx", tmp_path / "rf_opt.onnx"
    src.write_bytes(onx.SerializeToString())
    assert main(["optimize", str(src), "-o", str(dst)]) == 0
    import onnx

    want = _ort(onx, {"X": x})
    got = _ort(onnx.load(str(dst)), {"X": x})
    np.testing.assert_array_equal(got["output_label"], want["output_label"])
    assert got["output_probability"] == want["output_probability"]
