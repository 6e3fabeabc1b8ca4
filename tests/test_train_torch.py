"""edgert.train against PyTorch (optional: skipped without torch): every layer's forward output
and parameter/input gradients to 1e-5, one step of each optimizer to 1e-6, schedulers."""

from __future__ import annotations

import numpy as np
import pytest

from edgert.train import Tensor, manual_seed, nn, optim
from edgert.train import functional as F

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def copy_params(ours: nn.Module, theirs, rename=lambda k: k) -> None:
    state = {rename(k): torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()}
    _missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected, unexpected


def compare_layer(ours: nn.Module, theirs, x: np.ndarray, train: bool = True,
                  rename=lambda k: k, first=lambda o: o) -> None:
    copy_params(ours, theirs, rename)
    ours.train(train)
    theirs.train(train)
    xo = Tensor(x.copy(), requires_grad=x.dtype.kind == "f")
    xt = torch.from_numpy(x.copy()).requires_grad_(x.dtype.kind == "f")
    yo, yt = first(ours(xo)), first(theirs(xt))
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    w = np.random.default_rng(7).standard_normal(yo.shape).astype(yo.dtype)
    (yo * Tensor(w)).sum().backward()
    (yt * torch.from_numpy(w)).sum().backward()
    if x.dtype.kind == "f":
        np.testing.assert_allclose(xo.grad.data, xt.grad.numpy(), rtol=1e-5, atol=1e-5)
    tp = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.data, tp[rename(name)].grad.numpy(), rtol=1e-5,
                                   atol=1e-5, err_msg=name)
    tb = dict(theirs.named_buffers())
    for name, b in ours.named_buffers():
        if b.dtype.kind == "f":
            np.testing.assert_allclose(b, tb[rename(name)].numpy(), rtol=1e-5, atol=1e-6)


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


LAYERS = [
    ("linear", lambda m: m.Linear(5, 3), (4, 5)),
    ("conv", lambda m: m.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2), (2, 4, 7, 6)),
    ("conv_dil", lambda m: m.Conv2d(3, 4, (3, 2), padding=(2, 1), dilation=2), (2, 3, 7, 6)),
    ("depthwise", lambda m: m.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), (2, 4, 5, 5)),
    ("conv1d", lambda m: m.Conv1d(3, 5, 3, stride=2, padding=1), (2, 3, 9)),
    ("conv_t", lambda m: m.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1),
     (2, 3, 4, 3)),
    ("bn2d", lambda m: m.BatchNorm2d(3), (4, 3, 3, 3)),
    ("bn1d", lambda m: m.BatchNorm1d(5), (6, 5)),
    ("ln", lambda m: m.LayerNorm((3, 4)), (2, 3, 4)),
    ("maxpool", lambda m: m.MaxPool2d(3, 2, 1), (2, 2, 7, 6)),
    ("avgpool", lambda m: m.AvgPool2d(3, 2, 1), (2, 2, 7, 6)),
    ("avgpool_ex", lambda m: m.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 2, 7, 6)),
    ("adaptive", lambda m: m.AdaptiveAvgPool2d((3, 2)), (2, 2, 7, 5)),
    ("relu", lambda m: m.ReLU(), (3, 4)),
    ("leaky", lambda m: m.LeakyReLU(0.2), (3, 4)),
    ("gelu", lambda m: m.GELU(), (3, 4)),
    ("sigmoid", lambda m: m.Sigmoid(), (3, 4)),
    ("tanh", lambda m: m.Tanh(), (3, 4)),
    ("hardswish", lambda m: m.Hardswish(), (3, 4)),
    ("softmax", lambda m: m.Softmax(1), (3, 4)),
    ("logsoftmax", lambda m: m.LogSoftmax(1), (3, 4)),
    ("flatten", lambda m: m.Flatten(), (2, 3, 2)),
]


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[c[0] for c in LAYERS])
def test_layer_matches_torch(name, make, shape):
    manual_seed(0)
    compare_layer(make(nn), make(torch.nn), rand(*shape))
    if name.startswith("bn"):  # eval mode uses the running statistics just updated
        ours, theirs = make(nn), make(torch.nn)
        compare_layer(ours, theirs, rand(*shape))
        compare_layer(ours, theirs, rand(*shape, seed=1), train=False)


def test_embedding_and_dropout_eval():
    manual_seed(0)
    ours, theirs = nn.Embedding(5, 3), torch.nn.Embedding(5, 3)
    copy_params(ours, theirs)
    idx = np.array([[1, 4], [1, 0]])
    yo, yt = ours(idx), theirs(torch.from_numpy(idx))
    np.testing.assert_allclose(yo.data, yt.detach().numpy())
    yo.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(ours.weight.grad.data, theirs.weight.grad.numpy())
    d = nn.Dropout(0.3).eval()
    x = Tensor(rand(3, 4))
    assert d(x) is x


def test_dropout_train_scaling():
    manual_seed(0)
    y = nn.Dropout(0.25)(Tensor(np.ones((200, 50), np.float32)))
    kept = y.data != 0
    np.testing.assert_allclose(y.data[kept], 1 / 0.75)
    assert abs(kept.mean() - 0.75) < 0.02


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_matches_torch(kind):
    manual_seed(0)
    ours = nn.LSTM(3, 4) if kind == "lstm" else nn.GRU(3, 4)
    theirs = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(3, 4, batch_first=True)
    compare_layer(ours, theirs, rand(2, 5, 3), rename=lambda k: k.replace("cell.", "") + "_l0",
                  first=lambda o: o[0])


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_losses_match_torch(smoothing):
    x, y = rand(6, 4), np.array([0, 3, 1, 1, 2, 0])
    t = rand(6, 4, seed=2)
    b = (rand(6, 4, seed=3) > 0).astype(np.float32)
    tf = torch.nn.functional
    cases = [
        (lambda a: F.cross_entropy(a, y, smoothing),
         lambda a: tf.cross_entropy(a, torch.from_numpy(y), label_smoothing=smoothing)),
        (lambda a: F.nll_loss(F.log_softmax(a, 1), y),
         lambda a: tf.nll_loss(tf.log_softmax(a, 1), torch.from_numpy(y))),
        (lambda a: F.mse_loss(a, Tensor(t)), lambda a: tf.mse_loss(a, torch.from_numpy(t))),
        (lambda a: F.l1_loss(a, Tensor(t)), lambda a: tf.l1_loss(a, torch.from_numpy(t))),
        (lambda a: F.binary_cross_entropy_with_logits(a, b),
         lambda a: tf.binary_cross_entropy_with_logits(a, torch.from_numpy(b))),
    ]
    for ours, theirs in cases:
        xo, xt = Tensor(x.copy(), requires_grad=True), torch.from_numpy(x.copy()).requires_grad_()
        lo, lt = ours(xo), theirs(xt)
        np.testing.assert_allclose(lo.item(), lt.item(), rtol=1e-5)
        lo.backward()
        lt.backward()
        np.testing.assert_allclose(xo.grad.data, xt.grad.numpy(), rtol=1e-5, atol=1e-6)


OPTIMIZERS = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("sgd", {"lr": 0.1, "momentum": 0.5, "dampening": 0.3}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1, "betas": (0.8, 0.99)}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.1}),
    ("rmsprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.01}),
]


@pytest.mark.parametrize("name,kw", OPTIMIZERS)
def test_optimizer_steps_match_torch(name, kw):
    ours_cls = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW,
                "rmsprop": optim.RMSprop}[name]
    theirs_cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                  "rmsprop": torch.optim.RMSprop}[name]
    w0 = rand(4, 3)
    p = nn.Parameter(w0.copy())
    q = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    o, t = ours_cls([p], **kw), theirs_cls([q], **kw)
    for step in range(3):
        g = rand(4, 3, seed=10 + step)
        o.zero_grad()
        t.zero_grad()
        ((p * Tensor(g)).sum() + (p * p).sum()).backward()
        ((q * torch.from_numpy(g)).sum() + (q * q).sum()).backward()
        o.step()
        t.step()
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_schedulers_match_torch():
    def pair(make_ours, make_theirs, steps):
        p, q = nn.Parameter(np.zeros(1, np.float32)), torch.nn.Parameter(torch.zeros(1))
        o, t = optim.SGD([p], lr=0.5), torch.optim.SGD([q], lr=0.5)
        so, st = make_ours(o), make_theirs(t)
        for _ in range(steps):
            assert so.get_last_lr()[0] == pytest.approx(st.get_last_lr()[0], rel=1e-6, abs=1e-9)
            o.step()
            t.step()
            so.step()
            st.step()

    ls = torch.optim.lr_scheduler
    pair(lambda o: optim.StepLR(o, 3, 0.5), lambda t: ls.StepLR(t, 3, 0.5), 10)
    pair(lambda o: optim.CosineAnnealingLR(o, 8, 0.01), lambda t: ls.CosineAnnealingLR(t, 8, 0.01),
         8)
    pair(lambda o: optim.LinearLR(o, 0.1, 1.0, 4), lambda t: ls.LinearLR(t, 0.1, 1.0, 4), 8)
    pair(lambda o: optim.OneCycleLR(o, 1.0, 20), lambda t: ls.OneCycleLR(t, 1.0, total_steps=20,
                                                                         cycle_momentum=False), 20)


def test_clip_grad_norm_matches_torch():
    g = [rand(3, 4), rand(5, seed=1)]
    ps = [nn.Parameter(np.zeros_like(a)) for a in g]
    qs = [torch.nn.Parameter(torch.zeros(a.shape)) for a in g]
    for p, q, a in zip(ps, qs, g):
        p.grad = Tensor(a.copy())
        q.grad = torch.from_numpy(a.copy())
    n1 = optim.clip_grad_norm_(ps, 1.5)
    n2 = torch.nn.utils.clip_grad_norm_(qs, 1.5)
    assert n1 == pytest.approx(float(n2), rel=1e-5)
    for p, q in zip(ps, qs):
        np.testing.assert_allclose(p.grad.data, q.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_default_init_ranges_match_torch():
    for ours, theirs in [(nn.Linear(20, 7), torch.nn.Linear(20, 7)),
                         (nn.Conv2d(6, 8, 3, groups=2), torch.nn.Conv2d(6, 8, 3, groups=2))]:
        for (n, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
            bound = float(q.detach().abs().max())
            assert p.shape == tuple(q.shape), n
            # same uniform bound 1/sqrt(fan_in): max |w| of both is just under it
            fan_in = np.prod(p.shape[1:]) if n == "weight" else np.prod(
                ours.weight.shape[1:])
            assert np.abs(p.data).max() <= 1 / np.sqrt(fan_in) + 1e-7
            assert bound <= 1 / np.sqrt(fan_in) + 1e-7
