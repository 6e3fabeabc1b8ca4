"""export_onnx: the traced ONNX graph gives the engine's own forward output in onnxruntime and
in the edgert runtime (converter + Interpreter), at the traced and at another batch size."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edgert.converter import convert
from edgert.errors import UnsupportedOpError
from edgert.runtime import Interpreter
from edgert.train import Tensor, export_onnx, manual_seed, nn
from edgert.train import functional as F

RTOL, ATOL = 1e-4, 1e-5


class Mixed(nn.Module):
    """Exercises the op mappings: conv/bn/pools, activations, reshape, slicing, layer norm..."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1, stride=1)
        self.bn = nn.BatchNorm2d(6)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.ln = nn.LayerNorm(24)
        self.fc = nn.Linear(24, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = F.hardswish(self.bn(self.conv(x)))
        y = F.leaky_relu(self.dw(y), 0.1) + y * 0.5
        y = self.avg(self.pool(y))                 # (N, 6, 2, 2)
        y = F.gelu(self.ln(y.reshape(y.shape[0], -1)))
        z = self.fc(y).clamp(-2.0, 2.0)
        z = T_cat(z)
        return F.softmax(self.head(z[:, :5].sigmoid() - z[:, 5:].tanh()), 1)


def T_cat(z: Tensor) -> Tensor:
    from edgert.train.tensor import cat
    return cat([z, z.exp() / (1 + z.abs())], 1)


class SeqModel(nn.Module):
    """Token embedding + GRU (or LSTM) over a fixed length + mean pooling + linear."""

    def __init__(self, kind: str = "gru") -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 5) if kind == "gru" else nn.LSTM(4, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        seq, _ = self.rnn(x)
        return F.log_softmax(self.out(seq.mean(1)), -1)


def run_all(model: nn.Module, x: np.ndarray, tmp_path) -> None:
    path = tmp_path / "m.onnx"
    export_onnx(model, Tensor(x[:2]), path)
    model.eval()
    for batch in (x[:2], x):
        want = model(Tensor(batch)).data
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": batch})[0]
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
        interp = Interpreter(convert(str(path)))
        got2 = interp.run({"input": batch})["output"]
        np.testing.assert_allclose(got2, want, rtol=RTOL, atol=ATOL)


def test_export_mixed_model(tmp_path):
    manual_seed(0)
    m = Mixed()
    x = np.random.default_rng(0).standard_normal((5, 2, 4, 4)).astype(np.float32)
    m(Tensor(x))  # one training-mode pass so the BatchNorm running stats are not trivial
    assert m.training
    run_all(m, x, tmp_path)


def test_export_keeps_training_mode_and_names(tmp_path):
    manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Dropout(0.5), nn.Linear(3, 2))
    proto = export_onnx(m, np.zeros((1, 1, 5, 5), np.float32), tmp_path / "s.onnx")
    assert m.training
    names = {i.name for i in proto.graph.initializer}
    assert {"0.weight", "0.bias", "5.weight", "5.bias"} <= names
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    run_all(m, np.random.default_rng(1).random((4, 1, 5, 5), np.float32), tmp_path)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_export_recurrent(kind, tmp_path):
    manual_seed(0)
    run_all(SeqModel(kind),
            np.random.default_rng(2).standard_normal((3, 4, 4)).astype(np.float32), tmp_path)


def test_export_unsupported_op_is_named(tmp_path):
    class Bad(nn.Module):
        def forward(self, x):
            return F.cross_entropy(x, np.zeros(len(x), np.int64))

    with pytest.raises(UnsupportedOpError, match="no ONNX mapping"):
        export_onnx(Bad(), np.zeros((2, 3), np.float32))


class Decoder(nn.Module):
    """Transposed conv, padding, stack, reductions and Max/Min: the remaining mappings."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x: Tensor) -> Tensor:
        from edgert.train import tensor as T

        y = T.pad(self.up(x), (1, 0, 0, 1), 0.25)                 # (N, 3, 9, 9)
        s = T.stack([y.mean((2, 3)), y.var((2, 3)), y.max(3).min(2)], 1)
        return T.maximum(s, 0.1) - T.minimum(s, -0.1) + s.sum(1, keepdim=True) ** 2


def test_export_decoder(tmp_path):
    manual_seed(0)
    x = np.random.default_rng(3).standard_normal((4, 2, 4, 4)).astype(np.float32)
    run_all(Decoder(), x, tmp_path)


class ExplicitState(nn.Module):
    """LSTM or GRU given an explicit initial state built from the batch size in Python (the
    PyTorch idiom ``h0 = zeros(x.shape[0], hidden)``): exported as ConstantOfShape of the input's
    batch, not as a constant of the traced batch size."""

    def __init__(self, kind: str, fill: float = 0.0) -> None:
        super().__init__()
        self.kind, self.fill = kind, fill
        self.rnn = nn.LSTM(3, 4) if kind == "lstm" else nn.GRU(3, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        h0 = Tensor(np.full((x.shape[0], 4), self.fill, np.float32))
        state = (h0, Tensor(np.zeros((x.shape[0], 4), np.float32))) if self.kind == "lstm" else h0
        seq, last = self.rnn(x, state)
        h = last[0] if self.kind == "lstm" else last
        return self.out(seq.mean(1) + h)


@pytest.mark.parametrize("kind, fill", [("lstm", 0.0), ("gru", 0.0), ("gru", 0.5)])
def test_export_recurrent_explicit_state_is_batch_dynamic(kind, fill, tmp_path):
    manual_seed(0)
    m = ExplicitState(kind, fill)
    x = np.random.default_rng(4).standard_normal((5, 3, 3)).astype(np.float32)
    proto = export_onnx(m, Tensor(x[:2]), tmp_path / "s.onnx")
    # no (batch, hidden) constant of the traced batch (2) is left: the states follow the input
    assert not any(list(t.dims) == [2, 4] for t in proto.graph.initializer)
    assert any(n.op_type == "ConstantOfShape" for n in proto.graph.node)
    run_all(m, x, tmp_path)


def test_export_constant_not_sized_by_batch_stays_constant(tmp_path):
    # A (2, 3) constant that happens to match the traced batch of 2 but does not grow with the
    # batch (the probe trace at batch 3 has the same constant) is not rewritten.
    table = np.arange(6, dtype=np.float32).reshape(2, 3)

    class Fixed(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x @ Tensor(table).transpose(1, 0)

    x = np.random.default_rng(5).standard_normal((4, 3)).astype(np.float32)
    proto = export_onnx(Fixed(), Tensor(x[:2]), tmp_path / "f.onnx")
    assert not any(n.op_type == "ConstantOfShape" for n in proto.graph.node)
    run_all(Fixed(), x, tmp_path)
