"""edgert.train's user-facing contract: Module registration and state dicts, optimizer and
scheduler validation, DataLoader and transforms, the fit loop with callbacks and logs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgert.errors import EdgeRTError, ShapeError
from edgert.train import Tensor, manual_seed, nn, optim
from edgert.train import functional as F
from edgert.train.data import (
    Compose,
    DataLoader,
    Dataset,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    TensorDataset,
)
from edgert.train.fit import (
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    TensorBoardLogger,
    evaluate,
    fit,
    predict,
    read_tensorboard_scalars,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.heads = nn.ModuleList([nn.Linear(8, 3), nn.Linear(8, 3, bias=False)])
        self.scale = 2.0  # a plain attribute, not registered

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x)
        return self.heads[0](h) + self.heads[1](h) * self.scale


def test_module_registration_and_state_dict(tmp_path):
    manual_seed(0)
    m = Net()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias",
                     "heads.0.weight", "heads.0.bias", "heads.1.weight"]
    assert set(m.state_dict()) == set(names) | {"body.1.running_mean", "body.1.running_var"}
    assert m.num_parameters() == 4 * 8 + 8 + 8 + 8 + 8 * 3 + 3 + 8 * 3
    m.eval()
    assert not any(mod.training for mod in m.modules())
    m.train()
    assert m.body[1].training

    path = tmp_path / "net.npz"
    m.save(path)
    manual_seed(1)
    m2 = Net().load(path)
    x = Tensor(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    m.eval()
    m2.eval()
    np.testing.assert_array_equal(m(x).data, m2(x).data)


def test_state_dict_errors():
    m = Net()
    state = m.state_dict()
    del state["heads.0.bias"]
    state["extra.weight"] = np.zeros(1)
    with pytest.raises(EdgeRTError, match=r"missing keys: \['heads.0.bias'\].*unexpected keys: "
                                          r"\['extra.weight'\]"):
        m.load_state_dict(state)
    missing, unexpected = m.load_state_dict(state, strict=False)
    assert missing == ["heads.0.bias"] and unexpected == ["extra.weight"]
    bad = m.state_dict()
    bad["body.0.weight"] = np.zeros((2, 2))
    with pytest.raises(EdgeRTError, match=r"size mismatch for body.0.weight.*\(2, 2\).*\(8, 4\)"):
        m.load_state_dict(bad)


def test_optimizer_validation():
    p = nn.Parameter(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1: 1.0"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(EdgeRTError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(EdgeRTError, match="empty parameter list"):
        optim.SGD(nn.ReLU().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Invalid T_max"):
        optim.CosineAnnealingLR(optim.SGD([p], lr=0.1), 0)


def test_param_groups_and_zero_grad():
    a, b = nn.Parameter(np.ones(2, np.float32)), nn.Parameter(np.ones(2, np.float32))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    (a * 1.0 + b * 1.0).sum().backward()
    opt.step()
    np.testing.assert_allclose(a.data, 0.9)
    np.testing.assert_allclose(b.data, 0.5)
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_dataloader_batches_shuffle_drop_last():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10)
    batches = list(DataLoader(TensorDataset(x, y), batch_size=4))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(batches[0][1].data, [0, 1, 2, 3])
    dl = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True, seed=3, drop_last=True)
    assert len(dl) == 2
    e1 = np.concatenate([b[1].data for b in dl])
    e2 = np.concatenate([b[1].data for b in dl])
    again = np.concatenate([b[1].data for b in DataLoader(
        TensorDataset(x, y), batch_size=4, shuffle=True, seed=3, drop_last=True)])
    assert len(e1) == 8 and not np.array_equal(e1, e2)   # a new order each epoch
    np.testing.assert_array_equal(e1, again)              # ... reproducible from the seed
    assert len(set(e1.tolist())) == 8


def test_dataloader_generic_dataset_and_collate():
    class Squares(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.array([i, i * i], np.float32), i % 2

    xb, yb = next(iter(DataLoader(Squares(), batch_size=3)))
    np.testing.assert_array_equal(xb.data, [[0, 0], [1, 1], [2, 4]])
    np.testing.assert_array_equal(yb.data, [0, 1, 0])
    total = next(iter(DataLoader(Squares(), batch_size=5,
                                 collate_fn=lambda s: np.array([len(s)]))))
    assert total.data.tolist() == [5]
    with pytest.raises(ShapeError, match="differ in length"):
        TensorDataset(np.zeros(3), np.zeros(4))


def test_transforms():
    rng = np.random.default_rng(0)
    img = rng.random((6, 2, 5, 5)).astype(np.float32)
    crop = RandomCrop(5, padding=1)(img, np.random.default_rng(1))
    assert crop.shape == img.shape
    for i in range(6):  # each crop is the zero-padded image shifted by -1..1
        padded = np.pad(img[i], ((0, 0), (1, 1), (1, 1)))
        assert any(np.array_equal(crop[i], padded[:, dy:dy + 5, dx:dx + 5])
                   for dy in range(3) for dx in range(3))
    flip = RandomHorizontalFlip(1.0)(img, rng)
    np.testing.assert_array_equal(flip, img[..., ::-1])
    single = RandomHorizontalFlip(1.0)(img[0], rng)
    np.testing.assert_array_equal(single, img[0][..., ::-1])
    norm = Normalize([0.5, 0.2], [2.0, 4.0])(img)
    np.testing.assert_allclose(norm[:, 1], (img[:, 1] - 0.2) / 4.0, rtol=1e-6)
    pipe = Compose([RandomCrop(3), Normalize(0.0, 1.0)])
    assert pipe(img, rng).shape == (6, 2, 3, 3)


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 4)).astype(np.float32) * 0.5
    x[np.arange(n), y] += 2.0
    return x, y


def test_fit_callbacks_and_logs(tmp_path):
    manual_seed(0)
    xtr, ytr = _blobs(120, 0)
    xva, yva = _blobs(60, 1)
    m = Net()
    opt = optim.AdamW(m.parameters(), lr=0.05)
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=16, shuffle=True, seed=0)
    val = DataLoader(TensorDataset(xva, yva), batch_size=32)
    ckpt = ModelCheckpoint(tmp_path / "best.npz", monitor="val_accuracy", mode="max")
    stop = EarlyStopping("val_loss", patience=2, restore_best_weights=True)
    hist = fit(m, train, opt, epochs=15, val_loader=val, scheduler=optim.StepLR(opt, 5, 0.5),
               callbacks=[ckpt, stop, CSVLogger(tmp_path / "log.csv"),
                          TensorBoardLogger(tmp_path / "tb")])
    assert hist.history["val_accuracy"][-1] > 0.9
    assert len(hist.epoch) <= 15
    assert evaluate(m, val)["accuracy"] > 0.9
    assert (tmp_path / "best.npz").exists() and ckpt.best_epoch is not None
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and "val_loss" in rows[0]
    assert len(rows) == len(hist.epoch) + 1
    events = read_tensorboard_scalars(next((tmp_path / "tb").iterdir()))
    val_loss = [v for step, tag, v in events if tag == "val_loss"]
    np.testing.assert_allclose(val_loss, hist.history["val_loss"], rtol=1e-6)
    probs = predict(m, xva, batch_size=7)
    assert probs.shape == (60, 3)


def test_early_stopping_stops():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x) * 0.0  # loss never changes

    x, y = _blobs(20, 0)
    dl = DataLoader(TensorDataset(x, y), batch_size=10)
    stop = EarlyStopping("loss", patience=2, min_delta=1e-9)
    hist = fit(Flat(), dl, optim.SGD(Flat().parameters(), lr=0.1), epochs=10, callbacks=[stop])
    assert len(hist.epoch) == 3 and stop.stopped_epoch == 2


def test_training_reduces_loss_with_each_optimizer():
    x, y = _blobs(64, 3)
    for make in (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
                 lambda p: optim.Adam(p, lr=0.02), lambda p: optim.RMSprop(p, lr=0.01)):
        manual_seed(0)
        m = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
        opt = make(m.parameters())
        losses = []
        for _ in range(30):
            loss = F.cross_entropy(m(Tensor(x)), y)
            opt.zero_grad()
            loss.backward()
            optim.clip_grad_norm_(m.parameters(), 5.0)
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0]


def test_import_does_not_load_onnx():
    code = "import sys, edgert.train; print('onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _one_param_steps(opt_cls, steps: int = 3, **kw) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run ``steps`` steps on loss = sum(p * g_t); returns the final p and the gradients."""
    p = nn.Parameter(np.array([1.0, -2.0, 0.5]))
    opt = opt_cls([p], **kw)
    grads = [np.random.default_rng(s).standard_normal(3) for s in range(steps)]
    for g in grads:
        opt.zero_grad()
        (p * Tensor(g)).sum().backward()
        opt.step()
    return p.data, grads


def test_optimizer_formulas_without_torch():
    """One reference formula per optimizer, written out with NumPy (float64)."""
    p0 = np.array([1.0, -2.0, 0.5])
    got, gs = _one_param_steps(optim.SGD, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    p, buf = p0.copy(), None
    for g in gs:
        d = g + 0.01 * p
        buf = d.copy() if buf is None else 0.9 * buf + d
        p = p - 0.1 * (d + 0.9 * buf)
    np.testing.assert_allclose(got, p, rtol=1e-12)

    for cls, decoupled in ((optim.Adam, False), (optim.AdamW, True)):
        got, gs = _one_param_steps(cls, lr=0.01, weight_decay=0.1)
        p, m, v = p0.copy(), 0.0, 0.0
        for t, g in enumerate(gs, 1):
            if decoupled:
                p = p * (1 - 0.01 * 0.1)
            else:
                g = g + 0.1 * p
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            p = p - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        np.testing.assert_allclose(got, p, rtol=1e-10)

    got, gs = _one_param_steps(optim.RMSprop, lr=0.01, alpha=0.9)
    p, v = p0.copy(), 0.0
    for g in gs:
        v = 0.9 * v + 0.1 * g * g
        p = p - 0.01 * g / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(got, p, rtol=1e-10)


def test_scheduler_formulas_without_torch():
    p = nn.Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=1.0)
    cos = optim.CosineAnnealingLR(opt, 10, eta_min=0.1)
    lrs = []
    for _ in range(11):
        lrs.append(cos.get_last_lr()[0])
        cos.step()
    want = [0.1 + 0.9 * (1 + np.cos(np.pi * t / 10)) / 2 for t in range(11)]
    np.testing.assert_allclose(lrs, want, rtol=1e-12)
    opt = optim.SGD([p], lr=1.0)
    one = optim.OneCycleLR(opt, max_lr=2.0, total_steps=10, pct_start=0.3)
    seen = []
    for _ in range(10):
        seen.append(one.get_last_lr()[0])
        one.step()
    assert seen[0] == pytest.approx(2.0 / 25) and max(seen) == pytest.approx(2.0)
    assert seen[-1] == pytest.approx(2.0 / 25 / 1e4)
    assert int(np.argmax(seen)) == 2  # peak at pct_start * total - 1
    with pytest.raises(ValueError, match="total_steps"):
        one.step()
        one.step()


def test_plot_history(tmp_path):
    from edgert.train.fit import History, plot_history

    h = History()
    for e in range(3):
        h.append(e, {"loss": 1.0 / (e + 1), "val_loss": 1.2 / (e + 1), "accuracy": 0.5})
    path = tmp_path / "curves.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert plot_history(h, path) is False and not path.exists()
        return
    assert plot_history(h, path) is True
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
