"""edgert.train's loss modules (``nn.CrossEntropyLoss`` and friends), their functional forms,
``fit``'s Keras-style progress output, and a PyTorch-style training loop.

Every loss and every option is checked three ways: values against NumPy formulas written out
independently below, gradients against central finite differences in float64 (for the input
and, where PyTorch differentiates it, the target), and both against torch where it is installed.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import numpy as np
import pytest

from edgert.errors import ShapeError
from edgert.train import Tensor, manual_seed, nn, no_grad, optim
from edgert.train import functional as F
from edgert.train.data import DataLoader, TensorDataset
from edgert.train.fit import fit

EPS = 1e-6


# ----- NumPy reference formulas (PyTorch's documented definitions) --------------------------------
def _log_softmax(z: np.ndarray, axis: int) -> np.ndarray:
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def _finish(per: np.ndarray, reduction: str, denom: float) -> np.ndarray:
    if reduction == "none":
        return per
    if reduction == "sum":
        return np.asarray(per.sum())
    return np.asarray(per.sum() / denom)


def ref_cross_entropy(x, t, weight=None, ignore_index=-100, label_smoothing=0.0,
                      reduction="mean"):
    ax = 0 if x.ndim == 1 else 1
    c = x.shape[ax]
    w = np.ones(c) if weight is None else weight
    lp = np.moveaxis(_log_softmax(x, ax), ax, -1)  # (..., C)
    e = label_smoothing
    if t.shape == x.shape:  # class probabilities
        q = np.moveaxis(t, ax, -1) * (1 - e) + e / c
        per = -(q * w * lp).sum(-1)
        return _finish(per, reduction, per.size)
    per, denom = np.zeros(t.shape), 0.0
    for idx in np.ndindex(t.shape):
        y = int(t[idx])
        if y == ignore_index:
            continue
        row = lp[idx]
        per[idx] = (1 - e) * -w[y] * row[y] + e / c * -(w * row).sum()
        denom += w[y]
    return _finish(per, reduction, denom)


def ref_nll(x, t, weight=None, ignore_index=-100, reduction="mean"):
    ax = 0 if x.ndim == 1 else 1
    w = np.ones(x.shape[ax]) if weight is None else weight
    xm = np.moveaxis(x, ax, -1)
    per, denom = np.zeros(t.shape), 0.0
    for idx in np.ndindex(t.shape):
        y = int(t[idx])
        if y != ignore_index:
            per[idx] = -w[y] * xm[idx][y]
            denom += w[y]
    return _finish(per, reduction, denom)


def ref_mse(x, t, reduction="mean"):
    return _finish((x - t) ** 2, reduction, x.size)


def ref_l1(x, t, reduction="mean"):
    return _finish(np.abs(x - t), reduction, x.size)


def ref_smooth_l1(x, t, reduction="mean", beta=1.0):
    d = np.abs(x - t)
    per = d if beta == 0 else np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    return _finish(per, reduction, x.size)


def ref_bce_logits(x, t, weight=None, reduction="mean", pos_weight=None):
    s = 1 / (1 + np.exp(-x))  # the naive form: fine for the moderate logits used here
    pw = 1.0 if pos_weight is None else pos_weight
    per = -(pw * t * np.log(s) + (1 - t) * np.log(1 - s))
    per = per * (1.0 if weight is None else weight)
    return _finish(per, reduction, per.size)


def ref_bce(x, t, weight=None, reduction="mean"):
    per = -(t * np.log(x) + (1 - t) * np.log(1 - x)) * (1.0 if weight is None else weight)
    return _finish(per, reduction, per.size)


def ref_kl(x, t, reduction="mean", log_target=False):
    if log_target:
        per = np.exp(t) * (t - x)
    else:
        safe = np.where(t > 0, t, 1.0)
        per = np.where(t > 0, t * np.log(safe), 0.0) - t * x
    if reduction == "batchmean":
        return np.asarray(per.sum() / x.shape[0])
    return _finish(per, reduction, per.size)


REFS = {"CrossEntropyLoss": ref_cross_entropy, "NLLLoss": ref_nll, "MSELoss": ref_mse,
        "L1Loss": ref_l1, "SmoothL1Loss": ref_smooth_l1, "BCEWithLogitsLoss": ref_bce_logits,
        "BCELoss": ref_bce, "KLDivLoss": ref_kl}


# ----- the cases: every loss x every option x every reduction -------------------------------------
def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _class_targets(shape, c, seed, ignore=None):
    t = _rng(seed).integers(0, c, shape)
    flat = t.reshape(-1)
    if ignore is not None:
        if flat.size > 1:
            flat[::3] = ignore  # every third position ignored
        if flat[-1] == ignore:
            flat[-1] = 0 if ignore else 3  # never all: 'mean' over no target is NaN
    return t


def _probs(shape, seed):
    ax = 0 if len(shape) == 1 else 1
    p = _rng(seed).uniform(0.1, 1.0, shape)
    return p / p.sum(axis=ax, keepdims=True)


REDUCTIONS = ("mean", "sum", "none")
W4 = np.array([0.5, 2.0, 1.0, 1.5])
CE_SHAPES = [((5, 4), (5,)), ((2, 4, 3), (2, 3)), ((2, 4, 2, 3), (2, 2, 3)), ((4,), ())]
CE_OPTIONS = [
    ("plain", {}, None),
    ("weight", {"weight": W4}, None),
    ("ignore1", {"ignore_index": 1}, 1),
    ("ignore-100", {}, -100),  # the default ignore_index, present in the targets
    ("smooth", {"label_smoothing": 0.15}, None),
    ("all", {"weight": W4, "ignore_index": 2, "label_smoothing": 0.3}, 2),
]


def _cases():
    cases = []
    for red in REDUCTIONS:
        for si, (xs, ts) in enumerate(CE_SHAPES):
            for oname, kw, ign in CE_OPTIONS:
                x = _rng(si).standard_normal(xs) * 2
                t = _class_targets(ts, 4, si + 10, ign)
                cases.append((f"ce-{oname}-{len(xs)}d-{red}", "CrossEntropyLoss",
                              {**kw, "reduction": red}, x, t, False))
                if "label_smoothing" not in kw:
                    lp = _log_softmax(x, 0 if len(xs) == 1 else 1)
                    cases.append((f"nll-{oname}-{len(xs)}d-{red}", "NLLLoss",
                                  {**kw, "reduction": red}, lp, t, False))
            for oname, kw in [("plain", {}), ("weight", {"weight": W4}),
                              ("smooth", {"label_smoothing": 0.2}),
                              ("weight-smooth", {"weight": W4, "label_smoothing": 0.1})]:
                x = _rng(si + 20).standard_normal(xs) * 2
                cases.append((f"ce-prob-{oname}-{len(xs)}d-{red}", "CrossEntropyLoss",
                              {**kw, "reduction": red}, x, _probs(xs, si + 30), True))
        x, t = _rng(1).standard_normal((3, 4)) * 2, _rng(2).standard_normal((3, 4))
        cases.append((f"mse-{red}", "MSELoss", {"reduction": red}, x, t, True))
        cases.append((f"l1-{red}", "L1Loss", {"reduction": red}, x, t, True))
        for beta in (1.0, 0.3, 2.5, 0.0):
            cases.append((f"smoothl1-beta{beta}-{red}", "SmoothL1Loss",
                          {"reduction": red, "beta": beta}, x, t, True))
        y = _rng(3).uniform(0, 1, (3, 4))
        y[0, :2] = (0.0, 1.0)  # hard labels as well as soft ones
        bw, pw = _rng(4).uniform(0.5, 2, (3, 4)), np.array([0.5, 1.0, 2.0, 4.0])
        for oname, kw in [("plain", {}), ("weight", {"weight": bw}),
                          ("rowweight", {"weight": bw[0]}), ("posweight", {"pos_weight": pw}),
                          ("both", {"weight": bw, "pos_weight": pw})]:
            cases.append((f"bcelogits-{oname}-{red}", "BCEWithLogitsLoss",
                          {**kw, "reduction": red}, x, y, True))
        p = _rng(5).uniform(0.05, 0.95, (3, 4))
        for oname, kw in [("plain", {}), ("weight", {"weight": bw}),
                          ("rowweight", {"weight": bw[1]})]:
            cases.append((f"bce-{oname}-{red}", "BCELoss", {**kw, "reduction": red}, p, y, True))
    for red in REDUCTIONS + ("batchmean",):
        lp = _log_softmax(_rng(6).standard_normal((3, 4)), 1)
        tp = _probs((3, 4), 7)
        cases.append((f"kl-{red}", "KLDivLoss", {"reduction": red}, lp, tp, True))
        tz = tp.copy()
        tz[0, 1] = 0.0  # 0 * log 0 counts as 0; the input's gradient is still -target
        cases.append((f"kl-zero-{red}", "KLDivLoss", {"reduction": red}, lp, tz, False))
        cases.append((f"kl-logtarget-{red}", "KLDivLoss", {"reduction": red, "log_target": True},
                      lp, np.log(tp), True))
    return cases


CASES = _cases()
IDS = [c[0] for c in CASES]


def _run(name, kw, x, t):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KLDivLoss(reduction='mean') warns, as in PyTorch
        return getattr(nn, name)(**kw)(x, t)


def gradcheck(fn, *arrays: np.ndarray, rtol: float = 1e-5, atol: float = 1e-7) -> None:
    """The analytic gradient of ``sum(fn(*xs) * R)`` against central differences, every input."""
    arrays = [np.asarray(a, np.float64) for a in arrays]
    xs = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*xs)
    weights = np.asarray(np.random.default_rng(1).standard_normal(out.shape), np.float64)
    (out * Tensor(weights)).sum().backward()
    for i, a in enumerate(arrays):
        num = np.zeros_like(a)
        flat = a.reshape(-1)
        for j in range(flat.size):
            keep = flat[j]
            vals = []
            for d in (EPS, -EPS):
                flat[j] = keep + d
                with no_grad():
                    vals.append(float((fn(*[Tensor(b) for b in arrays]).data * weights).sum()))
            flat[j] = keep
            num.reshape(-1)[j] = (vals[0] - vals[1]) / (2 * EPS)
        assert xs[i].grad is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(xs[i].grad.data, num, rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {i}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_value_matches_numpy_formula(case):
    _, name, kw, x, t, _ = case
    out = _run(name, kw, Tensor(x), t)
    expect = REFS[name](x, t, **kw)
    assert out.shape == expect.shape
    np.testing.assert_allclose(out.data, expect, rtol=1e-12, atol=1e-12)
    # float32 inputs stay float32
    out32 = _run(name, kw, Tensor(x.astype(np.float32)), t.astype(np.float32)
                 if t.dtype.kind == "f" else t)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32.data, expect, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_matches_finite_differences(case):
    _, name, kw, x, t, target_grad = case
    if target_grad:
        gradcheck(lambda a, b: _run(name, kw, a, b), x, t)
    else:
        gradcheck(lambda a: _run(name, kw, a, t), x)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_torch(case):
    torch = pytest.importorskip("torch")
    _, name, kw, x, t, target_grad = case
    tkw = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    xo, xt = Tensor(x.copy(), requires_grad=True), torch.from_numpy(x.copy()).requires_grad_()
    to, tt = t.copy(), torch.from_numpy(t.copy())
    if target_grad:
        to, tt = Tensor(to, requires_grad=True), tt.requires_grad_()
    lo = _run(name, kw, xo, to)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lt = getattr(torch.nn, name)(**tkw)(xt, tt)
    np.testing.assert_allclose(lo.data, lt.detach().numpy(), rtol=1e-10, atol=1e-12)
    gw = np.random.default_rng(2).standard_normal(lt.shape)
    (lo * Tensor(gw)).sum().backward()
    (lt * torch.from_numpy(gw)).sum().backward()
    np.testing.assert_allclose(xo.grad.data, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    if target_grad:
        np.testing.assert_allclose(to.grad.data, tt.grad.numpy(), rtol=1e-9, atol=1e-12)


# ----- functional forms ---------------------------------------------------------------------------
def test_functional_forms_match_modules():
    x = _rng(0).standard_normal((4, 3))
    t = np.array([0, 2, 1, 2])
    w = np.array([1.0, 2.0, 0.5])
    pairs = [
        (F.cross_entropy(Tensor(x), t, 0.1, "sum", weight=w, ignore_index=1),
         nn.CrossEntropyLoss(w, ignore_index=1, reduction="sum", label_smoothing=0.1)),
        (F.nll_loss(Tensor(x), t, "none", weight=w, ignore_index=2),
         nn.NLLLoss(w, ignore_index=2, reduction="none")),
        (F.smooth_l1_loss(Tensor(x), x * 0.5, beta=0.4), nn.SmoothL1Loss(beta=0.4)),
        (F.binary_cross_entropy_with_logits(Tensor(x), x > 0, weight=x ** 2,
                                            pos_weight=w), nn.BCEWithLogitsLoss(x ** 2,
                                                                               pos_weight=w)),
        (F.binary_cross_entropy(Tensor(1 / (1 + np.exp(-x))), x > 0, "sum"),
         nn.BCELoss(reduction="sum")),
        (F.kl_div(Tensor(x), x * 0.1, "batchmean", log_target=True),
         nn.KLDivLoss(reduction="batchmean", log_target=True)),
    ]
    args = [(x, t), (x, t), (x, x * 0.5), (x, x > 0), (1 / (1 + np.exp(-x)), x > 0),
            (x, x * 0.1)]
    for (func_out, module), (a, b) in zip(pairs, args):
        np.testing.assert_array_equal(func_out.data, module(Tensor(a), b).data)


def test_nn_functional_is_the_functional_module():
    assert nn.functional is F
    assert importlib.import_module("edgert.train.nn.functional") is F
    ns: dict = {}
    exec("import edgert.train.nn.functional as G", ns)
    assert ns["G"] is F


def test_existing_positional_order_still_works():
    # label_smoothing and reduction stay the third and fourth positional arguments
    x, y = Tensor(_rng(0).standard_normal((3, 4))), np.array([0, 3, 1])
    np.testing.assert_allclose(F.cross_entropy(x, y, 0.1, "none").data,
                               ref_cross_entropy(x.data, y, label_smoothing=0.1,
                                                 reduction="none"))
    np.testing.assert_allclose(F.l1_loss(x, x.data * 2, "sum").data, np.abs(x.data).sum())


# ----- module API ---------------------------------------------------------------------------------
def test_constructor_arguments_follow_pytorch():
    w = np.array([1.0, 2.0, 3.0])
    ce = nn.CrossEntropyLoss(w, None, 2, None, "sum", 0.1)  # PyTorch's positional order
    assert (ce.ignore_index, ce.reduction, ce.label_smoothing) == (2, "sum", 0.1)
    np.testing.assert_array_equal(ce.weight, w)
    assert nn.NLLLoss(w, None, 5).ignore_index == 5
    assert nn.SmoothL1Loss(None, None, "none", 0.5).beta == 0.5
    assert nn.KLDivLoss(None, None, "batchmean", True).log_target
    bce = nn.BCEWithLogitsLoss(None, None, None, "mean", np.array([2.0]))
    np.testing.assert_array_equal(bce.pos_weight, [2.0])
    assert nn.MSELoss().reduction == nn.L1Loss().reduction == "mean"
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"
    assert repr(nn.MSELoss(reduction="sum")) == "MSELoss(reduction='sum')"


def test_weights_are_buffers():
    ce = nn.CrossEntropyLoss(weight=Tensor(np.array([1.0, 2.0], np.float32)))
    assert list(ce.state_dict()) == ["weight"] and ce.weight.dtype == np.float32
    assert list(ce.parameters()) == []
    assert ce.double().weight.dtype == np.float64
    bce = nn.BCEWithLogitsLoss(pos_weight=[3])  # a list of ints becomes float32
    assert bce.pos_weight.dtype == np.float32 and "weight" not in bce.state_dict()

    class WithCriterion(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.criterion = nn.CrossEntropyLoss(weight=np.array([1.0, 3.0], np.float32))

    assert set(WithCriterion().state_dict()) == {"fc.weight", "fc.bias", "criterion.weight"}


def test_legacy_size_average_and_reduce():
    cases = [((None, False), "none"), ((False, None), "sum"), ((True, True), "mean"),
             ((False, False), "none")]
    for (size_average, reduce), expect in cases:
        with pytest.warns(DeprecationWarning, match="size_average and reduce"):
            assert nn.MSELoss(size_average=size_average, reduce=reduce).reduction == expect
        with pytest.warns(DeprecationWarning):
            assert nn.CrossEntropyLoss(size_average=size_average,
                                       reduce=reduce).reduction == expect


def test_kl_div_mean_warns_like_pytorch():
    x, t = Tensor(_log_softmax(np.zeros((2, 3)), 1)), np.full((2, 3), 1 / 3)
    with pytest.warns(UserWarning, match="batchmean"):
        nn.KLDivLoss()(x, t)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.KLDivLoss(reduction="batchmean")(x, t)


def test_errors():
    x = Tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none'"):
        nn.CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="batchmean"):
        nn.MSELoss(reduction="batchmean")
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="beta"):
        nn.SmoothL1Loss(beta=-1)
    with pytest.raises(ShapeError, match="out of range"):
        nn.CrossEntropyLoss()(x, np.array([0, 4, 1]))
    with pytest.raises(ShapeError, match="out of range"):
        nn.NLLLoss(ignore_index=1)(x, np.array([0, -100, 1]))  # -100 is not ignored now
    with pytest.raises(ShapeError, match=r"targets of shape \(3,\)"):
        nn.CrossEntropyLoss()(x, np.array([0, 1]))
    with pytest.raises(ShapeError, match="floating point"):
        nn.CrossEntropyLoss()(x, np.zeros((3, 4), np.int64))
    with pytest.raises(ShapeError, match="targets must be class indices"):
        nn.CrossEntropyLoss()(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="ignore_index"):
        nn.CrossEntropyLoss(ignore_index=0)(x, np.full((3, 4), 0.25))
    with pytest.raises(ShapeError, match=r"one value per class, shape \(4,\)"):
        nn.CrossEntropyLoss(weight=np.ones(3))(x, np.array([0, 1, 2]))
    with pytest.raises(ShapeError, match="scalar"):
        nn.CrossEntropyLoss()(Tensor(np.float64(1.0)), np.array(0))
    with pytest.raises(ShapeError, match="target shape"):
        nn.BCEWithLogitsLoss()(x, np.zeros((3, 1)))
    with pytest.raises(ShapeError, match="pos_weight"):
        nn.BCEWithLogitsLoss(pos_weight=np.ones(3))(x, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.BCELoss()(Tensor(np.full((3, 4), 1.5)), np.zeros((3, 4)))
    with pytest.raises(ShapeError, match="do not broadcast"):
        nn.KLDivLoss(reduction="sum")(x, np.zeros((2, 4)))
    # PyTorch's positional weight lands in our reduction / label_smoothing slot: a clear error
    with pytest.raises(TypeError, match="weight="):
        F.binary_cross_entropy_with_logits(x, np.zeros((3, 4)), np.ones(4))
    with pytest.raises(TypeError, match="weight="):
        F.cross_entropy(x, np.array([0, 1, 2]), np.ones(4))


# ----- numerical stability and edge cases ---------------------------------------------------------
def test_cross_entropy_is_stable_for_extreme_logits():
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [0.0, -np.inf, 1.0]])
    y = np.array([1, 2, 0])
    a = Tensor(x, requires_grad=True)
    loss = nn.CrossEntropyLoss(reduction="none")(a, y)
    # -log softmax: 2e4 for the first row, ~0 for the second, log(1 + e) for the third
    np.testing.assert_allclose(loss.data, [2e4, 0.0, np.log1p(np.e)], rtol=1e-12, atol=1e-12)
    loss.sum().backward()
    assert np.all(np.isfinite(a.grad.data))
    p = np.exp(_log_softmax(np.where(np.isinf(x), -1e300, x), 1))
    np.testing.assert_allclose(a.grad.data, p - np.eye(3)[y], atol=1e-12)


def test_bce_with_logits_is_stable_for_extreme_logits():
    x = np.array([800.0, -800.0, 800.0, -800.0, 0.0])
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    a = Tensor(x, requires_grad=True)
    loss = nn.BCEWithLogitsLoss(pos_weight=np.array(3.0), reduction="none")(a, y)
    np.testing.assert_allclose(loss.data, [800.0, 2400.0, 0.0, 0.0, 3 * np.log(2)], atol=1e-12)
    loss.sum().backward()
    np.testing.assert_allclose(a.grad.data, [1.0, -3.0, 0.0, 0.0, -1.5], atol=1e-12)


def test_bce_clamps_log_at_minus_100():
    p = Tensor(np.array([0.0, 1.0, 1.0, 0.0]), requires_grad=True)
    loss = nn.BCELoss(reduction="none")(p, np.array([1.0, 0.0, 1.0, 0.0]))
    np.testing.assert_array_equal(loss.data, [100.0, 100.0, 0.0, 0.0])
    loss.sum().backward()
    assert np.all(np.isfinite(p.grad.data))


def test_mean_over_all_ignored_targets_is_nan_like_pytorch():
    x = Tensor(np.zeros((2, 3)), requires_grad=True)
    loss = nn.CrossEntropyLoss(ignore_index=1)(x, np.array([1, 1]))
    assert np.isnan(loss.item())
    assert nn.CrossEntropyLoss(ignore_index=1, reduction="sum")(x, np.array([1, 1])).item() == 0


def test_weighted_mean_divides_by_target_weights():
    # two samples with class weights 1 and 3: mean = (1 * l0 + 3 * l1) / (1 + 3)
    x = np.array([[2.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 1])
    per = -_log_softmax(x, 1)[np.arange(2), y]
    got = nn.CrossEntropyLoss(weight=np.array([1.0, 3.0]))(Tensor(x), y).item()
    assert got == pytest.approx((per[0] + 3 * per[1]) / 4, rel=1e-12)


# ----- fit(): Keras-style progress ----------------------------------------------------------------
def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 4)).astype(np.float32) * 0.5
    x[np.arange(n), y] += 2.0
    return x, y


def _fit(epochs: int = 2, **kw):
    manual_seed(0)
    x, y = _blobs(48, 0)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    train = DataLoader(TensorDataset(x, y), batch_size=16)
    val = DataLoader(TensorDataset(*_blobs(16, 1)), batch_size=16)
    return fit(m, train, optim.SGD(m.parameters(), lr=0.1), nn.CrossEntropyLoss(),
               epochs=epochs, val_loader=val, **kw)


@pytest.mark.parametrize("verbose", ["default", "auto", 1, 2, True])
def test_fit_prints_one_line_per_epoch_without_a_terminal(capsys, verbose):
    hist = _fit(3) if verbose == "default" else _fit(3, verbose=verbose)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 3, out
    for i, line in enumerate(lines):
        assert line.startswith(f"Epoch {i + 1}/3 - ")
        assert f"loss: {hist.history['loss'][i]:.4f}" in line
        for key in ("accuracy", "val_loss", "val_accuracy", "lr"):
            assert f" - {key}: " in line
    assert "\r" not in out and err == ""  # no bar in a log


def test_fit_verbose_0_is_silent(capsys):
    _fit(2, verbose=0)
    assert capsys.readouterr() == ("", "")


def test_fit_draws_a_bar_on_a_terminal(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    hist = _fit(2)
    out, err = capsys.readouterr()
    assert out == ""
    assert "Epoch 1/2" in err and "Epoch 2/2" in err and "3/3" in err and "batch" in err
    assert f"val_loss: {hist.history['val_loss'][-1]:.4f}" in err  # the bar ends with the logs
    # verbose=2 prints lines even on a terminal; progress=False means no bar
    for kw in ({"verbose": 2}, {"progress": False}):
        _fit(1, **kw)
        out, err = capsys.readouterr()
        assert out.startswith("Epoch 1/1 - ") and err == ""


def test_fit_falls_back_to_lines_without_tqdm(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ModuleNotFoundError
    _fit(2, verbose=1)
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and err == ""


def test_fit_rejects_unknown_verbose():
    for bad in (3, "loud", -1):
        with pytest.raises(ValueError, match="verbose"):
            _fit(1, verbose=bad)


# ----- a PyTorch-style training loop --------------------------------------------------------------
def _spirals(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three interleaved spirals: not linearly separable, so the MLP has to learn."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(3):
        r = np.linspace(0.1, 1.0, n_per_class)
        theta = k * 2 * np.pi / 3 + r * 3.0 + rng.normal(0, 0.08, n_per_class)
        xs.append(np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1))
        ys.append(np.full(n_per_class, k))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def test_pytorch_style_training_loop():
    manual_seed(0)
    x, y = _spirals(100, 0)
    model = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 3))
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, seed=0)
    epoch_losses = []
    for _ in range(40):
        model.train()
        total = 0.0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
        epoch_losses.append(total / len(x))
    model.eval()
    with no_grad():
        logits = model(Tensor(x))
    accuracy = float((logits.data.argmax(1) == y).mean())
    assert epoch_losses[-1] < 0.3 * epoch_losses[0], epoch_losses
    assert np.mean(epoch_losses[-5:]) < np.mean(epoch_losses[:5])
    assert accuracy > 0.9, accuracy
    assert criterion(logits, y).item() == pytest.approx(
        float(ref_cross_entropy(logits.data.astype(np.float64), y)), rel=1e-5)


def test_training_loops_with_the_other_losses():
    manual_seed(1)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    # binary labels from a linear rule: BCEWithLogits on raw logits, BCE after a Sigmoid
    yb = (x @ np.array([1.0, -2.0, 0.5], np.float32) > 0).astype(np.float32)[:, None]
    # a regression target for MSE / L1 / SmoothL1
    yr = (x @ np.array([0.5, 1.0, -1.0], np.float32))[:, None]
    setups = [(nn.BCEWithLogitsLoss(pos_weight=np.array([2.0], np.float32)), yb, False),
              (nn.BCELoss(), yb, True), (nn.MSELoss(), yr, False), (nn.L1Loss(), yr, False),
              (nn.SmoothL1Loss(beta=0.5), yr, False)]
    for criterion, target, sigmoid in setups:
        model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1),
                              *([nn.Sigmoid()] if sigmoid else []))
        opt = optim.Adam(model.parameters(), lr=0.03)
        losses = []
        for _ in range(60):
            opt.zero_grad()
            loss = criterion(model(Tensor(x)), target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0], (type(criterion).__name__, losses[0], losses[-1])
