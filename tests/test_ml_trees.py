"""Tree ensembles (ai.onnx.ml TreeEnsembleClassifier / TreeEnsembleRegressor / TreeEnsemble)
against onnxruntime, on random forests built here (every node mode, NaN routing, aggregates,
base values, post-transforms, binary and multi-class, int and string labels), on models that
scikit-learn's exporter writes, and on malformed ensembles that must be refused."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import edgert
from edgert.errors import EdgeRTError
from edgert.runtime import Interpreter

ML = "ai.onnx.ml"
V3_MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]


def random_trees(rng, trees: int, depth: int, features: int, modes=("BRANCH_LEQ",),
                 missing: bool = False) -> list[dict]:
    """Per tree: node ids in preorder, with feature, threshold, mode, children, leaf flag."""
    out = []
    for _ in range(trees):
        nodes = []

        def grow(level: int) -> int:
            nid = len(nodes)
            nodes.append(None)
            if level == depth or (level > 0 and rng.random() < 0.2):
                nodes[nid] = dict(leaf=True)
                return nid
            t = grow(level + 1)
            f = grow(level + 1)
            nodes[nid] = dict(leaf=False, feature=int(rng.integers(features)),
                              value=float(np.float32(rng.choice([-0.5, 0.0, 0.5, 1.0])
                                                     if "BRANCH_EQ" in modes else
                                                     rng.normal())),
                              mode=str(rng.choice(modes)), true=t, false=f,
                              missing=int(rng.integers(2)) if missing else 0)
            return nid

        grow(0)
        out.append(nodes)
    return out


def v3_attrs(trees: list[dict], rng, n_out: int, prefix: str, per_leaf: int = 1,
             with_missing: bool = False) -> dict:
    a = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values",
                         "nodes_modes", "nodes_truenodeids", "nodes_falsenodeids")}
    miss = []
    w = {k: [] for k in (f"{prefix}_treeids", f"{prefix}_nodeids", f"{prefix}_ids",
                         f"{prefix}_weights")}
    for t, nodes in enumerate(trees):
        for i, nd in enumerate(nodes):
            a["nodes_treeids"].append(t)
            a["nodes_nodeids"].append(i)
            if nd["leaf"]:
                a["nodes_featureids"].append(0)
                a["nodes_values"].append(0.0)
                a["nodes_modes"].append("LEAF")
                a["nodes_truenodeids"].append(0)
                a["nodes_falsenodeids"].append(0)
                miss.append(0)
                for target in rng.choice(n_out, size=min(per_leaf, n_out), replace=False):
                    w[f"{prefix}_treeids"].append(t)
                    w[f"{prefix}_nodeids"].append(i)
                    w[f"{prefix}_ids"].append(int(target))
                    w[f"{prefix}_weights"].append(float(np.float32(rng.normal())))
            else:
                a["nodes_featureids"].append(nd["feature"])
                a["nodes_values"].append(nd["value"])
                a["nodes_modes"].append(nd["mode"])
                a["nodes_truenodeids"].append(nd["true"])
                a["nodes_falsenodeids"].append(nd["false"])
                miss.append(nd["missing"])
    a.update(w)
    if with_missing:
        a["nodes_missing_value_tracks_true"] = miss
    return a


def model_of(node, inputs, outputs, ml_opset=3) -> onnx.ModelProto:
    graph = helper.make_graph([node], "g", inputs, outputs)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                helper.make_opsetid(ML, ml_opset)])
    m.ir_version = 9
    return m


def run_both(model: onnx.ModelProto, x: np.ndarray, threads: int = 1):
    # onnxruntime on one thread: its tree-parallel sums (float32) would otherwise change with
    # the thread split from run to run, and PROBIT amplifies such last-bit differences
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"X": x})
    it = Interpreter(edgert.convert(model), num_threads=threads)
    got = list(it.run({"X": x}).values())
    return ref, got


def data(rng, rows: int, features: int, nans: bool = False, grid: bool = False) -> np.ndarray:
    x = (rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0], size=(rows, features)) if grid else
         rng.normal(size=(rows, features))).astype(np.float32)
    if nans:
        x[rng.random(x.shape) < 0.15] = np.nan
    return x


def assert_close(ref, got, atol=1e-5):
    for r, g in zip(ref, got):
        if r.dtype.kind in "iuUO":
            np.testing.assert_array_equal(np.asarray(g).astype(r.dtype), r)
        else:
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=atol)


# ----- regressors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("agg", ["SUM", "AVERAGE", "MIN", "MAX"])
@pytest.mark.parametrize("targets", [1, 3])
@pytest.mark.parametrize("threads", [1, 2])
def test_regressor_aggregates(agg, targets, threads):
    rng = np.random.default_rng(hash((agg, targets)) % 1000)
    trees = random_trees(rng, 12, 5, 6)
    attrs = v3_attrs(trees, rng, targets, "target", per_leaf=2)
    base = [float(np.float32(v)) for v in rng.normal(size=targets)]
    node = helper.make_node("TreeEnsembleRegressor", ["X"], ["Y"], domain=ML, n_targets=targets,
                            aggregate_function=agg, base_values=base, **attrs)
    m = model_of(node, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 6])],
                 [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, targets])])
    for rows in (1, 3, 300):
        ref, got = run_both(m, data(rng, rows, 6), threads)
        assert_close(ref, got)


@pytest.mark.parametrize("mode", V3_MODES)
def test_every_node_mode_and_nan_routing(mode):
    rng = np.random.default_rng(V3_MODES.index(mode))
    trees = random_trees(rng, 8, 5, 4, modes=(mode,), missing=True)
    attrs = v3_attrs(trees, rng, 1, "target", with_missing=True)
    node = helper.make_node("TreeEnsembleRegressor", ["X"], ["Y"], domain=ML, n_targets=1,
                            **attrs)
    m = model_of(node, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
                 [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])])
    x = data(rng, 200, 4, nans=True, grid=mode in ("BRANCH_EQ", "BRANCH_NEQ"))
    ref, got = run_both(m, x)
    assert_close(ref, got)


def test_double_input_and_tensor_attributes():
    """ML opset 3's *_as_tensor (double) attributes with a float64 input."""
    rng = np.random.default_rng(7)
    trees = random_trees(rng, 10, 4, 5)
    attrs = v3_attrs(trees, rng, 2, "target")
    values = np.array(attrs.pop("nodes_values"), np.float64) + 1e-9
    weights = np.array(attrs.pop("target_weights"), np.float64)
    node = helper.make_node(
        "TreeEnsembleRegressor", ["X"], ["Y"], domain=ML, n_targets=2,
        nodes_values_as_tensor=helper.make_tensor("v", TensorProto.DOUBLE, values.shape, values),
        target_weights_as_tensor=helper.make_tensor("w", TensorProto.DOUBLE, weights.shape,
                                                    weights),
        **attrs)
    m = model_of(node, [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, 5])],
                 [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 2])])
    x = rng.normal(size=(50, 5))
    ref, got = run_both(m, x)
    assert_close(ref, got)


# ----- classifiers --------------------------------------------------------------------------------
CLASSIFIER_CASES = [
    # (classes, class ids used, string labels, base values, post_transform, signed weights)
    (3, "all", False, None, "NONE", True),
    (3, "all", True, [0.1, -0.2, 0.3], "SOFTMAX", True),
    (4, "all", False, None, "LOGISTIC", True),
    (4, "all", False, [0.5, 0.0, 0.0, 0.1], "SOFTMAX_ZERO", True),
    (2, "all", False, None, "NONE", False),  # both classes scored (a random forest)
    (2, "all", True, [0.2, -0.1], "NONE", True),
    (2, "first", False, None, "NONE", False),  # one score, positive weights: p > 0.5
    (2, "first", False, [0.3], "LOGISTIC", True),  # gradient boosting's form
    (2, "first", True, None, "LOGISTIC", True),
    (2, "first", False, [0.1, 0.1], "NONE", True),
    (2, "first", False, None, "PROBIT", False),
]


@pytest.mark.parametrize("case", CLASSIFIER_CASES,
                         ids=[str(i) for i in range(len(CLASSIFIER_CASES))])
def test_classifier_labels_and_scores(case):
    classes, used, strings, base, post, signed = case
    rng = np.random.default_rng(len(str(case)))
    trees = random_trees(rng, 9, 4, 5)
    n_used = classes if used == "all" else 1
    attrs = v3_attrs(trees, rng, n_used, "class", per_leaf=n_used)
    w = np.array(attrs["class_weights"], np.float32)
    if not signed:
        w = np.abs(w) / 9 if post != "PROBIT" else np.abs(w) / 20 + 0.01
    attrs["class_weights"] = [float(v) for v in w]
    labels = ({"classlabels_strings": [f"c{i}" for i in range(classes)]} if strings else
              {"classlabels_int64s": list(range(classes))})
    extra = {} if base is None else {"base_values": base}
    node = helper.make_node("TreeEnsembleClassifier", ["X"], ["label", "scores"], domain=ML,
                            post_transform=post, **labels, **extra, **attrs)
    label_type = TensorProto.STRING if strings else TensorProto.INT64
    m = model_of(node, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 5])],
                 [helper.make_tensor_value_info("label", label_type, [None]),
                  helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, classes])])
    ref, got = run_both(m, data(rng, 120, 5))
    if post == "PROBIT" and used == "first":
        # onnxruntime writes one score and leaves the second column unwritten (garbage or NaN
        # from run to run); edgert writes 0 there: compare the written column
        ref, got = [ref[0], ref[1][:, :1]], [got[0], got[1][:, :1]]
    # PROBIT's float32 formula cancels catastrophically near p = 0.5 (-a + sqrt(a^2 - b)): a
    # 1-ulp difference in log() between libms moves the result by up to ~4e-5 there
    assert_close(ref, got, atol=1e-4 if post == "PROBIT" else 1e-5)


# ----- TreeEnsemble (ML opset 5) ------------------------------------------------------------------
def v5_model(rng, trees: int, targets: int, agg: int, post: int, member: bool,
             dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    feats, splits, modes, tids, fids, tleaf, fleaf, miss = ([] for _ in range(8))
    leaf_t, leaf_w, roots, members = [], [], [], []

    def leaf() -> int:
        leaf_t.append(int(rng.integers(targets)))
        leaf_w.append(float(np.float32(rng.normal())))
        return len(leaf_t) - 1

    def grow(level: int) -> tuple[int, bool]:
        if level == 3 or (level and rng.random() < 0.25):
            return leaf(), True
        i = len(feats)
        feats.append(int(rng.integers(4)))
        m = 6 if member and rng.random() < 0.4 else int(rng.integers(6))
        modes.append(m)
        splits.append(float(rng.choice([-1.0, 0.0, 0.5, 1.0])))
        miss.append(int(rng.integers(2)))
        if m == 6:  # (onnxruntime implements integer members only)
            members.extend([float(v) for v in rng.choice([-1.0, 0.0, 1.0, 2.0], 2)] + [np.nan])
        tids.append(0), fids.append(0), tleaf.append(0), fleaf.append(0)
        t, tl = grow(level + 1)
        f, fl = grow(level + 1)
        tids[i], tleaf[i], fids[i], fleaf[i] = t, int(tl), f, int(fl)
        return i, False

    for _ in range(trees):
        root, is_leaf = grow(0)
        if is_leaf:  # a one-leaf tree: a node whose branches both reach the leaf
            i = len(feats)
            feats.append(0), modes.append(0), splits.append(0.0), miss.append(0)
            tids.append(root), fids.append(root), tleaf.append(1), fleaf.append(1)
            root = i
        roots.append(root)

    def t(name, values, code):
        arr = np.array(values)
        return helper.make_tensor(name, code, arr.shape, arr.tolist())

    np_dtype = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64}[dtype]
    attrs = dict(
        n_targets=targets, aggregate_function=agg, post_transform=post, tree_roots=roots,
        nodes_featureids=feats, nodes_truenodeids=tids, nodes_falsenodeids=fids,
        nodes_trueleafs=tleaf, nodes_falseleafs=fleaf, nodes_missing_value_tracks_true=miss,
        leaf_targetids=leaf_t,
        nodes_modes=t("modes", np.array(modes, np.uint8), TensorProto.UINT8),
        nodes_splits=t("splits", np.array(splits, np_dtype), dtype),
        leaf_weights=t("weights", np.array(leaf_w, np_dtype), dtype),
    )
    if members:
        attrs["membership_values"] = t("members", np.array(members, np_dtype), dtype)
    node = helper.make_node("TreeEnsemble", ["X"], ["Y"], domain=ML, **attrs)
    return model_of(node, [helper.make_tensor_value_info("X", dtype, [None, 4])],
                    [helper.make_tensor_value_info("Y", dtype, [None, targets])], ml_opset=5)


@pytest.mark.parametrize("agg", [0, 1, 2, 3])
@pytest.mark.parametrize("member", [False, True])
def test_tree_ensemble_v5(agg, member):
    rng = np.random.default_rng(agg * 2 + member)
    m = v5_model(rng, 10, 2, agg, 0, member)
    x = data(rng, 150, 4, nans=True, grid=True)
    if member:  # onnxruntime tests membership on int(x), the spec on x: integers agree
        x = np.where(np.isnan(x), x, np.round(x))
    ref, got = run_both(m, x)
    assert_close(ref, got)


def test_tree_ensemble_v5_double_probit():
    """(post_transform 4 = PROBIT; onnxruntime 1.32 reads 1 as LOGISTIC where the spec says
    SOFTMAX, so the transforms that differ are checked against the ONNX reference below.)"""
    rng = np.random.default_rng(11)
    m = v5_model(rng, 6, 3, 1, 4, False, dtype=TensorProto.DOUBLE)
    x = rng.normal(size=(40, 4))
    ref, got = run_both(m, x)
    assert got[0].dtype == np.float64
    assert_close(ref, got)


# ----- refused ensembles --------------------------------------------------------------------------
def _regressor(**changes):
    attrs = dict(nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0],
                 nodes_values=[0.5, 0.0, 0.0], nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"],
                 nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
                 target_treeids=[0, 0], target_nodeids=[1, 2], target_ids=[0, 0],
                 target_weights=[1.0, 2.0], n_targets=1)
    attrs.update(changes)
    node = helper.make_node("TreeEnsembleRegressor", ["X"], ["Y"], domain=ML, **attrs)
    return model_of(node, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])],
                    [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])])


def test_reference_regressor_is_sane():
    ref, got = run_both(_regressor(), np.array([[0.0, 0], [1, 0]], np.float32))
    assert_close(ref, got)


@pytest.mark.parametrize("changes, message", [
    (dict(nodes_truenodeids=[7, 0, 0]), "does not exist"),
    (dict(nodes_modes=["BRANCH_LEQ", "LEAF", "FOO"]), "unknown node mode"),
    (dict(nodes_values=[0.5, 0.0]), "nodes_values has 2"),
    (dict(target_ids=[0, 3]), "n_targets"),
    (dict(nodes_featureids=[5, 0, 0]), "feature 5"),
    (dict(target_nodeids=[1, 0]), "not a leaf"),
    (dict(nodes_modes=["BRANCH_LEQ", "BRANCH_LEQ", "LEAF"], nodes_truenodeids=[1, 0, 0],
          nodes_falsenodeids=[2, 2, 0], target_nodeids=[2, 2]), "no root|cycle"),
    (dict(aggregate_function="MEDIAN"), "aggregate_function"),
])
def test_malformed_ensembles_are_refused(changes, message):
    with pytest.raises(EdgeRTError, match=message):
        Interpreter(edgert.convert(_regressor(**changes))).run(
            {"X": np.zeros((1, 2), np.float32)})


def test_a_cycle_below_the_root_is_refused():
    m = _regressor(nodes_treeids=[0, 0, 0, 0], nodes_nodeids=[0, 1, 2, 3],
                   nodes_featureids=[0, 0, 0, 0], nodes_values=[0.5, 0.5, 0.5, 0.0],
                   nodes_modes=["BRANCH_LEQ", "BRANCH_LEQ", "BRANCH_LEQ", "LEAF"],
                   nodes_truenodeids=[1, 2, 1, 0], nodes_falsenodeids=[3, 3, 3, 0],
                   target_treeids=[0], target_nodeids=[3], target_ids=[0], target_weights=[1.0])
    with pytest.raises(EdgeRTError, match="cycle"):
        Interpreter(edgert.convert(m)).run({"X": np.zeros((1, 2), np.float32)})


def test_narrow_input_at_run_time_is_refused():
    m = _regressor(nodes_featureids=[1, 0, 0])
    m.graph.input[0].type.tensor_type.shape.dim[1].ClearField("dim_value")
    it = Interpreter(edgert.convert(m))
    with pytest.raises(EdgeRTError, match="feature 1"):
        it.run({"X": np.zeros((3, 1), np.float32)})


# ----- scikit-learn's exporter --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["rf", "gb", "rf_reg", "gb_reg", "rf_binary_strings",
                                  "gb_binary", "extra_trees"])
def test_sklearn_tree_models(kind):
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )

    if kind.endswith("reg"):
        x, y = make_regression(300, 8, random_state=0)
    else:
        x, y = make_classification(300, 8, n_informative=5,
                                   n_classes=2 if "binary" in kind else 3, random_state=0)
    x = x.astype(np.float32)
    if kind == "rf_binary_strings":
        y = np.array(["no", "yes"])[y]
    model = {
        "rf": lambda: RandomForestClassifier(30, max_depth=6, random_state=0),
        "gb": lambda: GradientBoostingClassifier(n_estimators=20, random_state=0),
        "rf_reg": lambda: RandomForestRegressor(20, random_state=0),
        "gb_reg": lambda: GradientBoostingRegressor(n_estimators=20, random_state=0),
        "rf_binary_strings": lambda: RandomForestClassifier(15, random_state=0),
        "gb_binary": lambda: GradientBoostingClassifier(n_estimators=20, random_state=0),
        "extra_trees": lambda: ExtraTreesClassifier(20, max_depth=5, random_state=0),
    }[kind]().fit(x, y)
    options = {"zipmap": False} if hasattr(model, "predict_proba") else None
    onx = skl2onnx.to_onnx(model, x[:1], target_opset={"": 17, ML: 3}, options=options)
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    ref = sess.run(None, {name: x})
    got = list(Interpreter(edgert.convert(onx), num_threads=2).run({name: x}).values())
    assert_close(ref, got)


@pytest.mark.parametrize("post", [1, 2, 3])
def test_tree_ensemble_v5_transforms_follow_the_spec(post):
    """TreeEnsemble's post_transform numbering (1 SOFTMAX, 2 LOGISTIC, 3 SOFTMAX_ZERO): the
    raw scores from onnxruntime (post_transform 0), transformed with NumPy formulas (onnxruntime
    1.32 reads 1 as LOGISTIC and the ONNX reference skips the transform)."""
    rng = np.random.default_rng(20 + post)
    m = v5_model(rng, 6, 3, 1, post, False)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    raw_model = onnx.ModelProto()
    raw_model.CopyFrom(m)
    for a in raw_model.graph.node[0].attribute:
        if a.name == "post_transform":
            a.i = 0
    sess = ort.InferenceSession(raw_model.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    raw = sess.run(None, {"X": x})[0].astype(np.float64)
    if post == 2:
        want = 1 / (1 + np.exp(-raw))
    else:
        e = np.exp(raw - raw.max(axis=1, keepdims=True))
        if post == 3:
            e = np.where(raw == 0, 0.0, e)
        want = e / e.sum(axis=1, keepdims=True)
    got = list(Interpreter(edgert.convert(m)).run({"X": x}).values())[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_single_target_regressor_applies_its_post_transform():
    """The spec applies post_transform to a one-target regressor's score (onnxruntime applies
    only PROBIT there): onnxruntime's raw scores, transformed with the logistic formula."""
    rng = np.random.default_rng(5)
    attrs = v3_attrs(random_trees(rng, 6, 4, 3), rng, 1, "target")
    x = data(rng, 30, 3)

    def model(post):
        node = helper.make_node("TreeEnsembleRegressor", ["X"], ["Y"], domain=ML, n_targets=1,
                                post_transform=post, **attrs)
        return model_of(node, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
                        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])])

    raw = run_both(model("NONE"), x)[0][0].astype(np.float64)
    got = list(Interpreter(edgert.convert(model("LOGISTIC"))).run({"X": x}).values())[0]
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-raw)), rtol=1e-6, atol=1e-7)
