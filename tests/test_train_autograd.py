"""edgert.train autograd: finite-difference gradient checks in float64 for every differentiable op,
plus the engine's contract (accumulation, broadcasting, no_grad, detach, errors)."""

from __future__ import annotations

import numpy as np
import pytest

from edgert.errors import EdgeRTError, ShapeError
from edgert.train import AutogradError, Tensor, manual_seed, nn, no_grad
from edgert.train import functional as F
from edgert.train import tensor as T

EPS = 1e-6


def gradcheck(fn, *arrays: np.ndarray, rtol: float = 1e-5, atol: float = 1e-7) -> None:
    """Compare the analytic gradient of ``sum(fn(*xs) * R)`` with central differences."""
    arrays = [np.asarray(a, np.float64) for a in arrays]
    xs = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*xs)
    weights = np.random.default_rng(1).standard_normal(out.shape)
    (out * Tensor(weights)).sum().backward()
    for i, a in enumerate(arrays):
        num = np.zeros_like(a)
        flat = a.reshape(-1)
        for j in range(flat.size):
            keep = flat[j]
            vals = []
            for d in (EPS, -EPS):
                flat[j] = keep + d
                probe = [Tensor(b) for b in arrays]
                with no_grad():
                    vals.append(float((fn(*probe).data * weights).sum()))
            flat[j] = keep
            num.reshape(-1)[j] = (vals[0] - vals[1]) / (2 * EPS)
        assert xs[i].grad is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(xs[i].grad.data, num, rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {i}")


def r(*shape: int, seed: int = 0, low: float | None = None) -> np.ndarray:
    g = np.random.default_rng(seed)
    if low is not None:
        return g.uniform(low, low + 1.5, shape)
    return g.standard_normal(shape)


# ----- elementwise, broadcasting, matmul ----------------------------------------------------------
@pytest.mark.parametrize("name,fn", [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b), ("maximum", T.maximum), ("minimum", T.minimum),
])
def test_binary_broadcast(name, fn):
    gradcheck(fn, r(2, 3, 4), r(3, 1, seed=1, low=0.5))


def test_pow_and_scalars():
    gradcheck(lambda a: a ** 3 + 2 * a - 1 / a, r(2, 3, low=0.5))
    gradcheck(lambda a, b: a ** b, r(2, 3, low=0.5), r(3, seed=2))
    gradcheck(lambda a: 2.0 ** a - (3 - a), r(4))


def test_matmul_variants():
    gradcheck(lambda a, b: a @ b, r(3, 4), r(4, 2, seed=1))
    gradcheck(lambda a, b: a @ b, r(2, 3, 4), r(4, 5, seed=1))          # broadcast batch
    gradcheck(lambda a, b: a @ b, r(2, 1, 3, 4), r(3, 4, 2, seed=1))
    gradcheck(lambda a, b: a @ b, r(4), r(4, 3, seed=1))                # 1-D left
    gradcheck(lambda a, b: a @ b, r(3, 4), r(4, seed=1))                # 1-D right


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "abs", "neg", "relu", "sigmoid", "tanh",
                                  "gelu", "hardswish", "leaky_relu", "clamp"])
def test_unary(name):
    x = r(3, 5, low=0.2) if name in ("log", "sqrt") else r(3, 5) * 2
    if name == "hardswish":
        x = np.array([-4.0, -2.5, -1.0, 0.3, 1.7, 2.9, 3.5, 5.0])  # every branch, no kinks
    fn = {"neg": lambda t: -t, "leaky_relu": lambda t: F.leaky_relu(t, 0.1),
          "clamp": lambda t: t.clamp(-0.5, 0.7)}.get(name, getattr(T, name, None))
    gradcheck(fn, x)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_log_softmax(dim):
    gradcheck(lambda t: F.softmax(t, dim), r(3, 4))
    gradcheck(lambda t: F.log_softmax(t, dim), r(3, 4))


# ----- reductions, shape ops ----------------------------------------------------------------------
@pytest.mark.parametrize("op", ["sum", "mean", "max", "min", "var", "std"])
@pytest.mark.parametrize("dim,keep", [(None, False), (1, False), ((0, 2), True), (-1, True)])
def test_reductions(op, dim, keep):
    gradcheck(lambda t: getattr(t, op)(dim, keep), r(2, 3, 4))


def test_shape_ops():
    x = r(2, 3, 4)
    gradcheck(lambda t: t.reshape(4, 6) * t.reshape(4, 6), x)
    gradcheck(lambda t: t.transpose(0, 2), x)
    gradcheck(lambda t: t.permute(1, 2, 0), x)
    gradcheck(lambda t: t.flatten(1).T, x)
    gradcheck(lambda t: t.unsqueeze(1).squeeze(1), x)
    gradcheck(lambda t: t[:, 1:, ::2], x)
    gradcheck(lambda t: t[1, :, -1], x)
    gradcheck(lambda t: t[np.array([0, 1, 1, 0])], x)   # repeated rows must add up
    gradcheck(lambda t: T.pad(t, (1, 2, 0, 1), 0.5), x)


def test_cat_stack():
    gradcheck(lambda a, b: T.cat([a, b, a], 1), r(2, 3), r(2, 2, seed=1))
    gradcheck(lambda a, b: T.stack([a, b], 2), r(2, 3), r(2, 3, seed=1))


# ----- nn ops -------------------------------------------------------------------------------------
def test_linear():
    gradcheck(F.linear, r(3, 4), r(5, 4, seed=1), r(5, seed=2))
    gradcheck(lambda x, w: F.linear(x, w), r(2, 3, 4), r(5, 4, seed=1))


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (1, 1, 1, 2), ((2, 1), (0, 1), (1, 2), 1),
])
def test_conv2d(stride, padding, dilation, groups):
    gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups),
              r(2, 4, 5, 6), r(4, 4 // groups, 3, 2, seed=1), r(4, seed=2))


def test_depthwise_conv_and_conv1d():
    gradcheck(lambda x, w: F.conv2d(x, w, None, 1, 1, 1, 3), r(1, 3, 4, 4), r(3, 1, 3, 3, seed=1))
    gradcheck(lambda x, w, b: F.conv1d(x, w, b, 2, 1), r(2, 3, 7), r(4, 3, 3, seed=1), r(4))


def test_conv_transpose2d():
    gradcheck(lambda x, w, b: F.conv_transpose2d(x, w, b, 2, 1, 1), r(2, 3, 3, 4),
              r(3, 2, 3, 3, seed=1), r(2, seed=2))


@pytest.mark.parametrize("kernel,stride,padding,dilation", [
    (2, None, 0, 1), (3, 2, 1, 1), (2, 1, 0, 2), ((2, 3), (1, 2), (1, 1), 1),
])
def test_max_pool2d(kernel, stride, padding, dilation):
    gradcheck(lambda x: F.max_pool2d(x, kernel, stride, padding, dilation), r(2, 2, 6, 7))


@pytest.mark.parametrize("include_pad", [True, False])
def test_avg_and_adaptive_pool(include_pad):
    gradcheck(lambda x: F.avg_pool2d(x, 3, 2, 1, include_pad), r(2, 2, 5, 6))
    gradcheck(lambda x: F.adaptive_avg_pool2d(x, (3, 2)), r(1, 2, 7, 5))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(training):
    mean, var = r(3, seed=5), r(3, seed=6, low=0.5)
    gradcheck(lambda x, w, b: F.batch_norm(x, mean.copy(), var.copy(), w, b, training),
              r(4, 3, 2, 2), r(3, seed=1), r(3, seed=2))
    gradcheck(lambda x: F.batch_norm(x, None, None, None, None, True), r(5, 3))


def test_layer_norm():
    gradcheck(lambda x, w, b: F.layer_norm(x, (3, 4), w, b), r(2, 3, 4), r(3, 4, seed=1),
              r(3, 4, seed=2))
    gradcheck(lambda x: F.layer_norm(x, (4,)), r(3, 4))


def test_dropout_and_embedding():
    def drop(x):
        manual_seed(3)  # the same mask on every probe
        return F.dropout(x, 0.4, True)

    gradcheck(drop, r(4, 5))
    gradcheck(lambda w: F.embedding(np.array([[1, 2], [2, 0]]), w), r(3, 4))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy(smoothing):
    y = np.array([0, 3, 1])
    gradcheck(lambda x: F.cross_entropy(x, y, smoothing), r(3, 4))
    gradcheck(lambda x: F.cross_entropy(x, y, smoothing, "none"), r(3, 4))


def test_other_losses():
    y = np.array([2, 0, 1])
    t = r(3, 4, seed=9)
    gradcheck(lambda x: F.nll_loss(F.log_softmax(x, 1), y), r(3, 3))
    gradcheck(lambda x: F.mse_loss(x, Tensor(t)), r(3, 4))
    gradcheck(lambda x: F.l1_loss(x, Tensor(t), "sum"), r(3, 4))
    target = (r(3, 4, seed=4) > 0).astype(np.float64)
    gradcheck(lambda x: F.binary_cross_entropy_with_logits(x, target), r(3, 4) * 3)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_cells(cell):
    manual_seed(0)
    m = (nn.LSTM(3, 4) if cell == "lstm" else nn.GRU(3, 4)).double()
    gradcheck(lambda x: m(x)[0], r(2, 3, 3))


# ----- engine contract ----------------------------------------------------------------------------
def test_accumulation_and_shared_subexpressions():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = x * x
    z = (y + y * x).sum()  # x used along several paths
    z.backward()
    np.testing.assert_allclose(x.grad.data, 2 * x.data + 3 * x.data ** 2)
    (x * 2).sum().backward()  # a second backward accumulates into .grad
    np.testing.assert_allclose(x.grad.data, 2 * x.data + 3 * x.data ** 2 + 2)


def test_deep_graph_no_recursion_limit():
    x = Tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [1.0, 1.0])


def test_dtypes_no_grad_detach_numpy():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.zeros(2)).dtype == np.float64
    x = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    assert (x * 2.0).dtype == np.float32  # Python scalars do not promote
    with no_grad():
        y = x * 2
    assert not y.requires_grad
    d = (x * 3).detach()
    assert not d.requires_grad and d.is_leaf
    arr = np.asarray(x * 1)
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 2)
    z = np.ones((2, 2), np.float32) * x  # ndarray on the left still builds a graph
    assert isinstance(z, Tensor) and z.requires_grad


def test_errors():
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ShapeError, match=r"\(2, 3\) and \(4, 5\)"):
        a @ Tensor(np.ones((4, 5)))
    with pytest.raises(AutogradError, match="non-scalar"):
        (a * 2).backward()
    with pytest.raises(AutogradError, match="does not require grad"):
        Tensor(np.ones(1)).backward()
    with pytest.raises(ShapeError, match=r"\(1, 3, 5, 5\).*\(4, 2, 3, 3\)"):
        F.conv2d(Tensor(np.ones((1, 3, 5, 5))), Tensor(np.ones((4, 2, 3, 3))))
    with pytest.raises(ShapeError, match="reshape"):
        a.reshape(4, 2)
    with pytest.raises(ShapeError, match="targets"):
        F.cross_entropy(a, np.array([0.5, 1.0]))
    assert issubclass(AutogradError, EdgeRTError)
    # backward with an explicit gradient works for non-scalars
    (a * 2).backward(np.ones((2, 3)))
    np.testing.assert_array_equal(a.grad.data, np.full((2, 3), 2.0))
