"""Materialize the onnx wheel's "light" model topologies with seeded random weights.

The onnx wheel ships nine classic ImageNet topologies under ``onnx/backend/test/data/light/``
(AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512).
To keep the wheel small their weights are not stored: each weight is made at run time by a
``ConstantOfShape`` node from a shape initializer, so every conv/gemm weight is the same
constant (0.02) and the network's output is meaningless — every class gets nearly the same
probability, a poor test of a runtime's numerics.

``materialize`` replaces each ``ConstantOfShape``-made weight with a seeded random initializer of
the same shape and dtype, removes the ``ConstantOfShape`` nodes and their shape inputs, and leaves
everything else untouched: same ops, opset, IR version, real inputs and outputs. The initializers
that the wheel does store (a few biases and BatchNormalization parameters) are kept as they are.

How the weights are drawn (each weight's role is found from the op that consumes it, looking
through ``Unsqueeze``/``Reshape``):

* Conv / Gemm / MatMul weights: He-normal, ``N(0, sqrt(2 / fan_in))``. With ReLU between layers
  this keeps the second moment of the activations about constant from layer to layer, so a
  16-layer VGG neither vanishes to 0 nor overflows (a uniform ``N(0, 1)`` would grow the
  activations by ``sqrt(fan_in)`` per layer: 1e30 after a dozen layers).
* Conv / Gemm biases ``N(0, 0.02)``; BatchNormalization and channel-scale (``Mul``) scales
  ``U(0.75, 1.25)``; BatchNormalization and channel-shift (``Add``) biases ``N(0, 0.05)``.
* BatchNormalization running mean/variance: first ``N(0, 0.1)`` / ``U(0.5, 1.5)``, then
  calibrated (below).

Two things are then set from data (``_calibrate``), in one forward pass of a seeded ``N(0, 1)``
input through a copy of the model in which each such BatchNormalization is an
InstanceNormalization (for batch 1 that normalizes with the input's own per-channel statistics,
as BatchNormalization does in training):

* each BN's running mean/variance become the per-channel mean and variance of its input. With
  made-up statistics the activations are not normalized, and residual sums in ResNet-50 double
  their variance at every block (2^16 after 16 blocks). The variance is floored at 1e-3
  (channels that ReLU kills would otherwise get a zero variance);
* the classifier in front of the Softmax is scaled so the logits have standard deviation
  ``LOGIT_STD`` (3): otherwise their scale depends on everything upstream (the stored biases,
  LRN, pooling) and ranges from a near-uniform softmax to a one-hot one.

Every tensor gets its own generator seeded from ``(seed, crc32(name))``, so a weight does not
change when another one is added or reordered.

Materialized files are cached (default ``~/.cache/edgert/models``, or ``$EDGERT_MODEL_CACHE``)
with a small JSON sidecar recording the materializer version, the seed and the SHA-256 of the
source topology; a cached file is reused only when all of these and its size match. Nothing
large is committed: VGG-19 alone holds 550 MB of weights.

Command line::

    python benchmarks/light_models.py [--out DIR] [--seed N] [--stats] [names...]

prints each model's path, size, op histogram and parameter count (``--stats`` also runs it in
onnxruntime on a random input and prints output statistics).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import pathlib
import sys
import tempfile
import zlib
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

LIGHT_MODELS: list[str] = [
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
]

# Bump when the way weights are drawn changes: cached files made by another version are remade.
MATERIALIZER_VERSION = 1

_VAR_FLOOR = 1e-3
# Standard deviation of the pre-softmax logits on the calibration input.
LOGIT_STD = 3.0


class MaterializeError(RuntimeError):
    """A light model could not be materialized (unknown name, unexpected graph structure)."""


# ----------------------------------------------------------------------------------------------
# Locations


def source_path(name: str) -> pathlib.Path:
    """Path of the weightless topology ``light_<name>.onnx`` inside the installed onnx package."""
    if name not in LIGHT_MODELS:
        raise MaterializeError(f"unknown light model {name!r}; choose one of {LIGHT_MODELS}")
    path = pathlib.Path(onnx.__file__).parent / "backend/test/data/light" / f"light_{name}.onnx"
    if not path.is_file():
        raise MaterializeError(f"{path} not found: this onnx wheel does not ship light models")
    return path


def default_cache_dir() -> pathlib.Path:
    """``$EDGERT_MODEL_CACHE`` if set, else ``~/.cache/edgert/models``."""
    env = os.environ.get("EDGERT_MODEL_CACHE")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "edgert" / "models"


# ----------------------------------------------------------------------------------------------
# Weight roles and distributions


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode())]))


def _reshaped(shape: tuple[int, ...], target: np.ndarray) -> tuple[int, ...]:
    """Shape after ONNX Reshape (0 copies a dim, -1 is inferred)."""
    dims = [shape[i] if int(d) == 0 else int(d) for i, d in enumerate(target.tolist())]
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        dims[dims.index(-1)] = int(np.prod(shape)) // known
    return tuple(dims)


def _find_role(
    name: str,
    shape: tuple[int, ...],
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]],
    constants: dict[str, np.ndarray],
) -> tuple[str, int, onnx.NodeProto, tuple[int, ...]]:
    """Follow ``name`` through Unsqueeze/Reshape to the op that uses it.

    Returns (op_type, input index, node, shape as that op sees it).
    """
    while True:
        uses = consumers.get(name, [])
        if len(uses) != 1:
            raise MaterializeError(
                f"weight {name!r} has {len(uses)} consumers; expected exactly one"
            )
        node, idx = uses[0]
        if node.op_type == "Unsqueeze" and idx == 0:
            # Opset < 13: axes is an attribute. The scale/shift tensors here are 1-D per-channel
            # vectors, so only the element count matters for their role.
            axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), [])
            out_rank = len(shape) + len(axes)
            dims = [1] * out_rank
            rest = iter(shape)
            for i in range(out_rank):
                if i not in [a % out_rank for a in axes]:
                    dims[i] = next(rest)
            shape, name = tuple(dims), node.output[0]
            continue
        if node.op_type == "Reshape" and idx == 0:
            if node.input[1] not in constants:
                raise MaterializeError(f"Reshape {node.name!r} of {name!r} has no constant shape")
            shape, name = _reshaped(shape, constants[node.input[1]]), node.output[0]
            continue
        return node.op_type, idx, node, shape


def _attr(node: onnx.NodeProto, key: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == key:
            return helper.get_attribute_value(a)
    return default


def _draw(
    name: str, shape: tuple[int, ...], role: tuple[str, int, onnx.NodeProto, tuple[int, ...]],
    seed: int,
) -> np.ndarray:
    """Draw one weight of ``shape`` for the op/input ``role`` (see the module docstring)."""
    op, idx, node, seen = role
    rng = _rng(seed, name)
    size = int(np.prod(shape))

    def normal(std: float) -> np.ndarray:
        return (rng.standard_normal(size, dtype=np.float32) * np.float32(std)).reshape(shape)

    def uniform(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, size).astype(np.float32).reshape(shape)

    if (op in ("Conv", "ConvTranspose") and idx == 1) or (op in ("Gemm", "MatMul") and idx == 1):
        if op == "Conv":
            fan_in = int(np.prod(seen[1:]))  # (C / group) * kh * kw
        elif op == "ConvTranspose":
            fan_in = seen[0] * int(np.prod(seen[2:]))
        elif op == "Gemm":
            fan_in = seen[1] if _attr(node, "transB", 0) else seen[0]
        else:
            fan_in = seen[-2]
        return normal(np.sqrt(2.0 / max(fan_in, 1)))
    if op in ("Conv", "ConvTranspose", "Gemm") and idx == 2:
        return normal(0.02)
    if op == "BatchNormalization":
        if idx == 1:
            return uniform(0.75, 1.25)
        if idx == 2:
            return normal(0.05)
        if idx == 3:
            return normal(0.1)
        if idx == 4:
            return uniform(0.5, 1.5)
    if op == "Mul":
        return uniform(0.75, 1.25)
    if op in ("Add", "Sum"):
        return normal(0.05)
    raise MaterializeError(
        f"weight {name!r} feeds input {idx} of {op} node {node.name!r}: no rule for this role"
    )


# ----------------------------------------------------------------------------------------------
# Materializing one model in memory


# Ops between a classifier and its Softmax that commute with a positive scale c:
# f(c * x) = c * f(x). Scaling the classifier's weight and bias by c then scales the logits by c.
_HOMOGENEOUS = {
    "AveragePool", "Dropout", "Flatten", "GlobalAveragePool", "Identity", "MaxPool", "Relu",
    "Reshape", "Squeeze", "Transpose", "Unsqueeze",
}


def _find_classifier(
    graph: onnx.GraphProto, weights: dict[str, np.ndarray]
) -> tuple[str, list[str]] | None:
    """The Conv/Gemm behind the (single) Softmax, if its weight and bias are ours to rescale.

    Returns (name of the Softmax input, names of the classifier's weight and bias in
    ``weights``) or None.
    """
    producer = {o: n for n in graph.node for o in n.output}
    softmaxes = [n for n in graph.node if n.op_type == "Softmax"]
    if len(softmaxes) != 1:
        return None
    logits = softmaxes[0].input[0]
    node = producer.get(logits)
    while node is not None and node.op_type in _HOMOGENEOUS:
        node = producer.get(node.input[0])
    if node is None or node.op_type not in ("Conv", "Gemm"):
        return None
    params = []
    for x in node.input[1:3]:
        # Look through a Reshape/Unsqueeze of the weight (Inception v1 reshapes its Gemm weight).
        while x and x not in weights and x in producer and producer[x].op_type in (
                "Reshape", "Unsqueeze"):
            x = producer[x].input[0]
        if x and x not in weights:
            return None  # stored in the wheel: leave it alone
        params.append(x)
    if node.op_type == "Gemm" and float(_attr(node, "alpha", 1.0)) != float(
            _attr(node, "beta", 1.0)):
        return None  # alpha * A @ B + beta * C still scales by c, but keep the rule simple
    return logits, [x for x in params if x]


def _calibrate(
    model: onnx.ModelProto, bn_nodes: list[onnx.NodeProto], weights: dict[str, np.ndarray],
    seed: int,
) -> None:
    """Data-dependent part of the initialization (see the module docstring). Needs onnxruntime.

    One forward pass of a seeded N(0, 1) input through a copy of ``model`` holding the
    provisional ``weights``, in which every BatchNormalization of ``bn_nodes`` is replaced by an
    InstanceNormalization with the same scale, bias and epsilon. For batch 1 both compute
    ``scale * (x - mean_c) / sqrt(var_c + eps) + bias``, InstanceNormalization with the
    statistics of x itself; so setting each BN's running mean/var to the per-channel mean and
    (biased) variance of its probed input makes the final model compute exactly what the copy
    computed, layer after layer, in a single pass.

    Then the classifier in front of the Softmax (if any, see ``_find_classifier``) has its weight
    and bias scaled so the logits have standard deviation ``LOGIT_STD`` on that input: a random
    network's logit scale depends on every layer before it (biases stored in the wheel, pooling,
    LRN) and ranges from 0.1 (a uniform softmax) to 10 (one-hot), neither a good test.

    Updates ``weights`` in place.
    """
    import onnxruntime as ort  # only needed here; kept out of import time

    calib = onnx.ModelProto()
    calib.CopyFrom(model)
    _add_initializers(calib, weights)
    graph = calib.graph
    classifier = _find_classifier(graph, weights)
    targets = {n.output[0] for n in bn_nodes}
    probes: list[tuple[str, str, str]] = []  # (BN input, mean name, var name)
    new_nodes = []
    for node in graph.node:
        if node.op_type == "BatchNormalization" and node.output[0] in targets:
            x, scale, bias, mean, var = node.input[:5]
            eps = float(_attr(node, "epsilon", 1e-5))
            new_nodes.append(helper.make_node(
                "InstanceNormalization", [x, scale, bias], [node.output[0]],
                name=(node.name or node.output[0]) + "_calib", epsilon=eps,
            ))
            probes.append((x, mean, var))
        else:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    names = [x for x, _, _ in probes] + ([classifier[0]] if classifier else [])
    known = {o.name for o in graph.output}
    for x in names:
        if x not in known:
            graph.output.append(helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None))
            known.add(x)
    if not names:
        return

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    data = calib.SerializeToString()
    del calib  # VGG-19: each copy of the weights is 550 MB
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    del data
    values = dict(zip(names, sess.run(names, random_feeds(sess, seed)), strict=True))
    for x, mean, var in probes:
        act = values[x].astype(np.float64)
        axes = (0,) + tuple(range(2, act.ndim))
        weights[mean] = act.mean(axis=axes).astype(np.float32)
        weights[var] = np.maximum(act.var(axis=axes), _VAR_FLOOR).astype(np.float32)
    if classifier:
        logits, params = classifier
        std = float(values[logits].astype(np.float64).std())
        if np.isfinite(std) and std > 0:
            c = np.float32(LOGIT_STD / std)
            for name in params:
                weights[name] = weights[name] * c


def random_feeds(sess: Any, seed: int) -> dict[str, np.ndarray]:
    """Seeded ``N(0, 1)`` float32 inputs for an onnxruntime session (dynamic dims set to 1)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def materialize_model(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Return a copy of ``model`` with every ConstantOfShape-made weight replaced (see module doc).

    Args:
        model: a light topology as shipped in the onnx wheel.
        seed: base seed for all weights and for the calibration input.
    """
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = collections.defaultdict(list)
    for node in graph.node:
        for i, x in enumerate(node.input):
            if x:
                consumers[x].append((node, i))
    graph_outputs = {o.name for o in graph.output}

    cos_nodes = [n for n in graph.node if n.op_type == "ConstantOfShape"]
    if not cos_nodes:
        raise MaterializeError(f"graph {graph.name!r} has no ConstantOfShape weights")
    weights: dict[str, np.ndarray] = {}
    roles = {}
    dropped_shapes: set[str] = set()
    for node in cos_nodes:
        shape_name, out = node.input[0], node.output[0]
        if shape_name not in constants:
            raise MaterializeError(f"ConstantOfShape {out!r}: shape {shape_name!r} not constant")
        if out in graph_outputs:
            raise MaterializeError(f"ConstantOfShape {out!r} is a graph output")
        value = _attr(node, "value", None)
        dtype = numpy_helper.to_array(value).dtype if value is not None else np.float32
        if dtype != np.float32:
            raise MaterializeError(f"ConstantOfShape {out!r} makes {dtype}, expected float32")
        shape = tuple(int(d) for d in constants[shape_name].tolist())
        roles[out] = _find_role(out, shape, consumers, constants)
        weights[out] = _draw(out, shape, roles[out], seed)
        dropped_shapes.add(shape_name)
    # A shape tensor still read by another node stays.
    cos_set = set(map(id, cos_nodes))
    for node in graph.node:
        if id(node) not in cos_set:
            dropped_shapes.difference_update(node.input)

    calib_bns = [
        node for node in graph.node
        if node.op_type == "BatchNormalization" and all(x in weights for x in node.input[3:5])
    ]

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    keep_nodes = [n for n in g.node if n.op_type != "ConstantOfShape"]
    del g.node[:]
    g.node.extend(keep_nodes)
    keep_inits = [t for t in g.initializer if t.name not in dropped_shapes]
    del g.initializer[:]
    g.initializer.extend(keep_inits)
    keep_inputs = [i for i in g.input if i.name not in dropped_shapes]
    del g.input[:]
    g.input.extend(keep_inputs)

    _calibrate(out, calib_bns, weights, seed)
    _add_initializers(out, weights, consume=True)
    helper.set_model_props(out, {
        "edgert.materialized": json.dumps({"version": MATERIALIZER_VERSION, "seed": seed})
    })
    return out


def _add_initializers(model: onnx.ModelProto, weights: dict[str, np.ndarray],
                      consume: bool = False) -> None:
    """Add ``weights`` to ``model``; with ``consume`` the dict is emptied as it goes (one copy
    of each weight at a time, not two of all of them: VGG-19's are 574 MB)."""
    g = model.graph
    for name in sorted(weights):
        arr = weights.pop(name) if consume else weights[name]
        g.initializer.append(numpy_helper.from_array(arr, name))
        # IR version < 4 requires every initializer to be listed as a graph input too.
        if model.ir_version < 4:
            g.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, arr.shape))


# ----------------------------------------------------------------------------------------------
# Cache


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stamp(name: str, seed: int) -> dict[str, Any]:
    return {
        "name": name,
        "seed": seed,
        "materializer_version": MATERIALIZER_VERSION,
        "source_sha256": _sha256(source_path(name)),
    }


def _cached(path: pathlib.Path, sidecar: pathlib.Path, stamp: dict[str, Any]) -> bool:
    try:
        meta = json.loads(sidecar.read_text())
        return all(meta.get(k) == v for k, v in stamp.items()) and (
            path.stat().st_size == meta.get("size")
        )
    except (OSError, ValueError):
        return False


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    # Write beside the target and rename: concurrent test processes never see a partial file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes 0600: give it the mode a file written in place would get (the umask)
        from edgert.format.writer import new_file_mode

        os.chmod(tmp, new_file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def materialize_path(
    name: str, cache_dir: str | os.PathLike | None = None, seed: int = 0
) -> pathlib.Path | None:
    """The cached file of :func:`materialize`, or None when it is not made yet (or stale)."""
    folder = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = folder / f"light_{name}_seed{seed}.onnx"
    return path if _cached(path, path.with_suffix(".json"), _stamp(name, seed)) else None


def materialize(
    name: str, cache_dir: str | os.PathLike | None = None, seed: int = 0
) -> pathlib.Path:
    """Materialize light model ``name`` with seeded random weights; return the cached path.

    A file already in the cache is reused when its sidecar matches (materializer version, seed,
    SHA-256 of the source topology, file size). Otherwise the model is made, checked with
    ``onnx.checker.check_model(full_check=True)`` and written atomically.

    Args:
        name: one of ``LIGHT_MODELS``.
        cache_dir: folder for the files; default ``default_cache_dir()``.
        seed: base seed for the weights.

    Example:
        >>> path = materialize("squeezenet")   # ~/.cache/edgert/models/light_squeezenet_seed0.onnx
    """
    stamp = _stamp(name, seed)
    folder = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"light_{name}_seed{seed}.onnx"
    sidecar = path.with_suffix(".json")
    if _cached(path, sidecar, stamp):
        return path

    model = materialize_model(onnx.load(str(source_path(name))), seed)
    data = model.SerializeToString()
    del model
    _atomic_write(path, data)
    del data
    onnx.checker.check_model(str(path), full_check=True)
    stamp["size"] = path.stat().st_size
    _atomic_write(sidecar, (json.dumps(stamp, indent=2) + "\n").encode())
    return path


# ----------------------------------------------------------------------------------------------
# Summaries and command line


def summarize(path: str | os.PathLike) -> dict[str, Any]:
    """Size, op histogram and parameter count of an ONNX file."""
    model = onnx.load(str(path))
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    return {
        "path": str(path),
        "size_bytes": os.path.getsize(path),
        "parameters": params,
        "ops": dict(sorted(ops.items())),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
    }


def output_stats(path: str | os.PathLike, seed: int = 1) -> dict[str, Any]:
    """Run ``path`` in onnxruntime on a seeded random input; summarize the first output.

    ``max_prob`` near 1 would mean a saturated (one-hot) softmax; ``std`` near 0 a dead network.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(None, random_feeds(sess, seed))[0].astype(np.float64)
    flat = y.reshape(y.shape[0], -1)
    stats = {
        "shape": list(y.shape),
        "finite": bool(np.isfinite(y).all()),
        "min": float(y.min()),
        "max": float(y.max()),
        "std": float(y.std()),
        "distinct": int(np.unique(y).size),
        "softmax": bool((y >= 0).all() and np.allclose(flat.sum(axis=1), 1.0, atol=1e-4)),
    }
    if stats["softmax"]:
        stats["max_prob"] = float(flat.max(axis=1).max())
        stats["top5_mass"] = float(np.sort(flat, axis=1)[:, -5:].sum(axis=1).mean())
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"models (default all): {' '.join(LIGHT_MODELS)}")
    parser.add_argument("--out", help="cache folder (default $EDGERT_MODEL_CACHE or "
                        "~/.cache/edgert/models)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stats", action="store_true",
                        help="also run each model in onnxruntime and print output statistics")
    args = parser.parse_args(argv)
    names = args.names or LIGHT_MODELS
    for name in names:
        if name not in LIGHT_MODELS:
            parser.error(f"unknown model {name!r}; choose from {' '.join(LIGHT_MODELS)}")
    for name in names:
        path = materialize(name, args.out, args.seed)
        info = summarize(path)
        print(f"{name}: {path}")
        print(f"  size {info['size_bytes'] / 1e6:.1f} MB, {info['parameters']:,} parameters, "
              f"opset {info['opset']}")
        print("  ops " + ", ".join(f"{k} {v}" for k, v in info["ops"].items()))
        if args.stats:
            s = output_stats(path)
            line = (f"  output {s['shape']}: finite={s['finite']} min={s['min']:.3g} "
                    f"max={s['max']:.3g} std={s['std']:.3g} distinct={s['distinct']}")
            if s["softmax"]:
                line += f" softmax max_prob={s['max_prob']:.3f} top5_mass={s['top5_mass']:.3f}"
            print(line)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
