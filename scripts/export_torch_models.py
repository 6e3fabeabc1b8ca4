"""Export small PyTorch models to ONNX as test data, with PyTorch's outputs as the reference.

Four models, each with seeded random weights, in ``eval()`` mode and a dynamic batch dimension,
chosen to cover what PyTorch's ONNX exporter emits for common layers:

* ``torch_cnn``: Conv variants (plain, depthwise with stride, grouped with dilation,
  asymmetric padding, 1x1 without bias), BatchNorm after ReLU (so the exporter cannot fold it
  into the Conv), ReLU6 (Clip), Hardswish, MaxPool / AvgPool with ``ceil_mode`` and
  ``count_include_pad=False``, Flatten, Linear (Gemm), Softmax.
* ``torch_mobilenet``: a tiny MobileNetV2 — inverted residual blocks (1x1 expand, 3x3
  depthwise, 1x1 project, residual Add when shapes allow), ReLU6, AdaptiveAvgPool2d(1).
* ``torch_transformer``: token ids -> Embedding (Gather) + learned positions sliced to the
  dynamic sequence length (Shape/Slice), one pre-norm encoder block with multi-head attention
  written out (LayerNormalization, MatMul, Reshape/Transpose built from the dynamic batch and
  sequence dims, scaled Softmax), a GELU MLP (exact, via Erf), residuals; outputs the token
  states and the logits of the first token (Gather). Batch and sequence are both dynamic.
* ``torch_decoder``: an upsampling decoder — strided Conv, ConvTranspose (with output_padding),
  nearest and bilinear Resize, Concat skip connection, constant and reflect Pad, Sigmoid.

Each model is written to ``tests/data/<name>.onnx`` and ``tests/data/<name>.npz``; the npz
holds two input sets of different batch sizes (and, for the transformer, sequence lengths) and
PyTorch's outputs for them, keyed ``b<k>_in_<input name>`` and ``b<k>_out_<output name>``.

Exporter: the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) with
``dynamic_axes``, opset 17. It needs no package beyond torch (and onnx), and its graphs are the
kind that most deployed ONNX files have. The declared output shapes are then rewritten from the
reference outputs (the exporter mislabels one, see ``_declare_output_shapes``). Run from the
repository root (needs torch, not an edgert dependency)::

    python scripts/export_torch_models.py [--out tests/data] [names...]
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OPSET = 17
ROOT = pathlib.Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------
# Models


class SmallCNN(nn.Module):
    """Conv/BN/activation/pool variants on a 3x20x20 image, 10-way softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)  # depthwise, stride 2
        self.bn2 = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 12, 3, padding=2, dilation=2, groups=2)
        self.asym = nn.Conv2d(12, 12, (3, 1), padding=(1, 0))  # non-square kernel and pads
        self.pw = nn.Conv2d(12, 16, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 3 * 3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(F.relu6(self.conv1(x)))              # BN after the activation: kept as BN
        x = F.hardswish(self.bn2(self.dw(x)))             # (folded into the Conv by the exporter)
        x = F.relu6(self.grouped(x))                      # 10x10
        x = F.max_pool2d(self.asym(x), 3, stride=2, ceil_mode=True)           # 5x5
        x = self.bn3(F.hardswish(self.pw(x)))
        x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)  # 3x3
        return F.softmax(self.fc(torch.flatten(x, 1)), dim=1)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection (+ residual)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class TinyMobileNetV2(nn.Module):
    """MobileNetV2 layout at toy width on a 3x32x32 image, 10 classes (logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(8, 8, 1, 1),
            InvertedResidual(8, 12, 2, 4),
            InvertedResidual(12, 12, 1, 4),
            InvertedResidual(12, 16, 2, 4),
            InvertedResidual(16, 16, 1, 4),
        )
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(x, 1))


class TinyEncoder(nn.Module):
    """One pre-norm transformer encoder block over token ids; attention written out."""

    def __init__(self, vocab: int = 50, dim: int = 16, heads: int = 2, max_len: int = 32,
                 classes: int = 5) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.ln_out = nn.LayerNorm(dim)
        self.cls = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, seq = ids.shape
        x = self.embed(ids) + self.pos[:, :seq]            # Gather; Slice to the dynamic length
        dim = x.shape[-1]
        head_dim = dim // self.heads
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)   # Split

        def split_heads(t: torch.Tensor) -> torch.Tensor:   # (B, S, D) -> (B, H, S, Dh)
            return t.reshape(batch, seq, self.heads, head_dim).transpose(1, 2)

        q, k, v = split_heads(q), split_heads(k), split_heads(v)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(head_dim), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(batch, seq, dim)
        x = x + self.proj(y)
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))     # exact GELU: Erf
        x = self.ln_out(x)
        return x, self.cls(x[:, 0])                         # Gather of the first token


class UpDecoder(nn.Module):
    """Encoder-decoder on a 4x8x8 map: ConvTranspose, Resize nearest/bilinear, skip, Pad."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(4, 8, 3, padding=1)
        self.enc2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)                      # 4x4
        self.up1 = nn.ConvTranspose2d(12, 8, 3, stride=2, padding=1, output_padding=1)  # 8x8
        self.fuse = nn.Conv2d(16, 8, 3, padding=1)
        self.up2 = nn.ConvTranspose2d(8, 6, 2, stride=2)                           # 16x16
        self.mix = nn.Conv2d(6, 4, 3)                                               # 18x18 -> 16
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = F.relu(self.enc1(x))
        x = F.relu(self.enc2(skip))
        x = F.relu(self.up1(x))
        x = F.relu(self.fuse(torch.cat([x, skip], dim=1)))    # Concat skip connection
        x = F.leaky_relu(self.up2(x), 0.1)
        x = F.interpolate(x, scale_factor=0.5, mode="nearest")                      # 8x8
        x = F.interpolate(x, size=(14, 14), mode="bilinear", align_corners=False)   # 14x14
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")                                  # 16x16
        x = F.relu(self.mix(F.pad(x, (1, 1, 2, 0), value=0.5)))                     # 16x16
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")                      # 32x32
        return torch.sigmoid(self.out(x))


# ----------------------------------------------------------------------------------------------
# Export


def _randomize(model: nn.Module, gen: torch.Generator) -> None:
    """Seeded random weights; BatchNorm gets non-trivial running statistics and affine terms."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                if isinstance(mod, nn.ConvTranspose2d):
                    # Each output sees about 1/stride^2 of the kernel taps.
                    fan_in = (mod.in_channels // mod.groups * math.prod(mod.kernel_size)
                              / math.prod(mod.stride))
                else:
                    fan_in = mod.weight[0].numel()
                mod.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
                if mod.bias is not None:
                    mod.bias.normal_(0.0, 0.1, generator=gen)
            elif isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5, generator=gen)
                mod.bias.normal_(0.0, 0.2, generator=gen)
                mod.running_mean.normal_(0.0, 0.3, generator=gen)
                mod.running_var.uniform_(0.5, 2.0, generator=gen)
            elif isinstance(mod, nn.LayerNorm):
                mod.weight.uniform_(0.5, 1.5, generator=gen)
                mod.bias.normal_(0.0, 0.1, generator=gen)
            elif isinstance(mod, nn.Embedding):
                mod.weight.normal_(0.0, 1.0, generator=gen)
        for name, p in model.named_parameters(recurse=False):
            if name == "pos":
                p.normal_(0.0, 0.5, generator=gen)


def _images(shape: tuple[int, ...]) -> Callable[[np.random.Generator, int], dict[str, Any]]:
    def make(rng: np.random.Generator, batch: int) -> dict[str, Any]:
        return {"input": rng.standard_normal((batch, *shape)).astype(np.float32)}
    return make


def _tokens(vocab: int) -> Callable[[np.random.Generator, int], dict[str, Any]]:
    def make(rng: np.random.Generator, batch: int) -> dict[str, Any]:
        seq = {1: 5, 3: 7}.get(batch, 6)  # a different sequence length for each set
        return {"ids": rng.integers(0, vocab, (batch, seq), dtype=np.int64)}
    return make


# name -> (model factory, input maker, output names, dynamic axes of the inputs)
MODELS: dict[str, tuple[Callable[[], nn.Module], Callable, list[str], dict[str, dict[int, str]]]]
MODELS = {
    "torch_cnn": (SmallCNN, _images((3, 20, 20)), ["probabilities"], {"input": {0: "batch"}}),
    "torch_mobilenet": (TinyMobileNetV2, _images((3, 32, 32)), ["logits"],
                        {"input": {0: "batch"}}),
    "torch_transformer": (TinyEncoder, _tokens(50), ["tokens", "logits"],
                          {"ids": {0: "batch", 1: "seq"}}),
    "torch_decoder": (UpDecoder, _images((4, 8, 8)), ["mask"], {"input": {0: "batch"}}),
}
BATCHES = (1, 3)


def export(name: str, out_dir: pathlib.Path, seed: int = 0) -> tuple[pathlib.Path, pathlib.Path]:
    """Export model ``name`` to ``out_dir/<name>.onnx`` and its reference to ``<name>.npz``."""
    factory, make_inputs, output_names, in_axes = MODELS[name]
    torch.manual_seed(seed)
    model = factory()
    _randomize(model, torch.Generator().manual_seed(seed))
    model.eval()

    rng = np.random.default_rng(seed)
    sets = {f"b{b}": make_inputs(rng, b) for b in BATCHES}
    input_names = list(next(iter(sets.values())))
    ref: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for key, feeds in sets.items():
            outs = model(*[torch.from_numpy(feeds[n]) for n in input_names])
            outs = outs if isinstance(outs, tuple) else (outs,)
            for n in input_names:
                ref[f"{key}_in_{n}"] = feeds[n]
            for n, y in zip(output_names, outs, strict=True):
                ref[f"{key}_out_{n}"] = y.numpy()

    dynamic_axes = dict(in_axes)
    for n in output_names:
        dynamic_axes[n] = {0: "batch"}
    if name == "torch_transformer":
        dynamic_axes["tokens"] = {0: "batch", 1: "seq"}
    onnx_path = out_dir / f"{name}.onnx"
    example = tuple(torch.from_numpy(v) for v in sets[f"b{BATCHES[-1]}"].values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model, example, str(onnx_path), dynamo=False, opset_version=OPSET,
            input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    _declare_output_shapes(onnx_path, ref, dynamic_axes)
    npz_path = out_dir / f"{name}.npz"
    np.savez_compressed(npz_path, **ref)
    return onnx_path, npz_path


def _declare_output_shapes(
    path: pathlib.Path, ref: dict[str, np.ndarray], dynamic_axes: dict[str, dict[int, str]]
) -> None:
    """Rewrite the graph outputs' declared shapes from what PyTorch actually produced.

    The TorchScript exporter's symbolic shape inference can mislabel output dims: for the
    decoder it declares ``mask`` as ``[batch, 2, batch, ?]`` after the scale-factor Resize,
    i.e. claims the height equals the batch size. A dim is declared static where both reference
    batches agree (and it is not a dynamic axis), else symbolic.
    """
    import onnx  # a dependency of edgert's convert extra; only needed here

    model = onnx.load(str(path))
    for out in model.graph.output:
        shapes = [v.shape for k, v in ref.items() if k.endswith(f"_out_{out.name}")]
        dims = out.type.tensor_type.shape.dim
        del dims[:]
        for axis in range(len(shapes[0])):
            dim = dims.add()
            sizes = {s[axis] for s in shapes}
            if axis in dynamic_axes.get(out.name, {}):
                dim.dim_param = dynamic_axes[out.name][axis]
            elif len(sizes) == 1:
                dim.dim_value = sizes.pop()
            else:
                dim.dim_param = f"{out.name}_dim{axis}"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"models (default all): {' '.join(MODELS)}")
    parser.add_argument("--out", default=str(ROOT / "tests" / "data"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.names or list(MODELS):
        if name not in MODELS:
            parser.error(f"unknown model {name!r}; choose from {' '.join(MODELS)}")
        onnx_path, npz_path = export(name, out_dir, args.seed)
        print(f"{name}: {onnx_path} ({onnx_path.stat().st_size:,} B), "
              f"{npz_path} ({npz_path.stat().st_size:,} B)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
