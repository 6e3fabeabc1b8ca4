"""The ``edgert`` command line.

    edgert convert model.onnx -o model.edgert      ONNX -> .edgert
    edgert optimize in.onnx -o out.onnx            ONNX -> optimized ONNX
    edgert run model.edgert --input x=x.npy        run once, print or save the outputs
    edgert inspect model.edgert|model.onnx         inputs/outputs, op histogram, parameters, size
                                                   (an .onnx file as written; --converted: as
                                                   converted)
    edgert bench model.edgert|model.onnx           load / first-run / steady-state latency
    edgert warmup [model ...] [--all]              compile kernels ahead of first use
    edgert serve model.edgert|repository/          Open Inference Protocol server (HTTP,
                                                   gRPC; the ``serve`` extra)

Every command accepts an ``.onnx`` model where a ``.edgert`` one is expected: it is converted in
memory first (this needs the ``convert`` extra: ``pip install edgert[convert]``).
Errors print one ``edgert: error: ...`` line and exit with status 1 (2 for bad arguments).
``--json`` (convert, run, quantize, inspect, bench) prints one JSON object on stdout, nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import statistics
import sys
import time
from typing import Any

import numpy as np

from edgert.errors import EdgeRTError, InputError


class CLIError(EdgeRTError):
    """A problem with the command line's arguments or files."""


class UsageError(CLIError):
    """A malformed argument (exit status 2, as argparse's own errors)."""


_EDGERT_MAGIC = b"EDGR"  # the .edgert FlatBuffer file identifier (bytes 4..8)


def _is_edgert(path: str | pathlib.Path) -> bool:
    """Whether ``path`` starts as an .edgert file does (whatever its suffix)."""
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == _EDGERT_MAGIC
    except OSError:
        return False


def _require_onnx_file(path: str | pathlib.Path) -> None:
    """A clear error when an ``.edgert`` file is given where an ONNX model is read (the
    protobuf parser would say only that it cannot parse it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return  # the reader reports it
    if head[4:8] == _EDGERT_MAGIC:
        raise CLIError(f"{path} is an .edgert model already; this command reads ONNX models")


# ----- helpers ----------------------------------------------------------------------------------
def _read_model_arg(path: str) -> tuple[bytes | str, str]:
    """Return something Interpreter/read_model accepts, converting an ONNX file in memory."""
    p = pathlib.Path(path)
    if not p.exists():
        raise CLIError(f"no such file: {path}")
    if p.is_dir():
        raise CLIError(f"{path} is a folder, expected a model file")
    if p.suffix.lower() == ".onnx" and not _is_edgert(p):  # (an .edgert file named .onnx: as is)
        convert = _converter()
        return convert(str(p)), "onnx"
    return str(p), "edgert"


def _require_convert_extra(what: str = "reading ONNX") -> None:
    """A CLIError naming the missing package when the ``convert`` extra is not installed (the
    converter imports onnx lazily, deep inside a conversion)."""
    import importlib.util

    for name in ("onnx", "google.protobuf"):
        try:
            missing = importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            missing = True
        if missing:
            raise CLIError(f"{what} needs the convert extra ({name.split('.')[0]} is not "
                           "installed): pip install 'edgert[convert]'")


def _converter():
    _require_convert_extra()
    from edgert.converter import convert

    return convert


def _output_path(path: str | pathlib.Path, what: str = "output") -> pathlib.Path:
    """``path`` checked before any work: its folder exists and it is not a folder itself."""
    p = pathlib.Path(path)
    if p.is_dir():
        raise CLIError(f"{what} {str(path)!r} is a folder; give a file name")
    if not p.parent.is_dir():
        raise CLIError(f"{what} {str(path)!r}: the folder {str(p.parent)!r} does not exist")
    return p


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().replace(",", "x").split("x") if d != "")
    except ValueError:
        raise UsageError(f"bad shape {text!r}: write it like 1x3x224x224") from None
    if not dims or any(d < 0 for d in dims):
        raise UsageError(f"bad shape {text!r}: write it like 1x3x224x224")
    return dims


def _name_value(text: str, what: str) -> tuple[str | None, str]:
    if "=" in text:
        name, value = text.split("=", 1)
        if not name:
            raise UsageError(f"bad {what} {text!r}: expected NAME=VALUE")
        return name, value
    return None, text


def _npz_key(path: str) -> tuple[str, str | None]:
    """``FILE.npz:KEY`` -> (``FILE.npz``, ``KEY``): one array of an .npz file (a path that
    exists as written is taken whole)."""
    if ":" in path and not os.path.exists(path):
        head, key = path.rsplit(":", 1)
        if head.lower().endswith((".npz", ".npy")):  # (a .npy with a key: an error later)
            if not key:
                raise UsageError(f"bad --input {path!r}: write FILE.npz:KEY")
            return head, key
    return path, None


def _load_array_file(path: str) -> dict[str, np.ndarray] | np.ndarray:
    p = pathlib.Path(path)
    if not p.exists():
        raise CLIError(f"no such input file: {path}")
    if p.is_dir():
        raise CLIError(f"input {path} is a folder, expected a .npy or .npz file")
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise CLIError(f"{path} is not a .npy or .npz file (save arrays with numpy.save or "
                       "numpy.savez)")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise CLIError(f"cannot read {path} as .npy/.npz: {exc}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return {k: data[k] for k in data.files}
    return data


def _collect_feeds(interp, input_args: list[str], shape_args: list[str], seed: int,
                   random_missing: bool, dynamic_default: bool = False
                   ) -> dict[str, np.ndarray]:
    """Feeds from ``--input`` files, and random data for the rest when ``random_missing``; a
    random input's dynamic dims come from ``--shape``, else are an error, or 1 with
    ``dynamic_default`` (``bench``: it says so on stderr)."""
    names = interp.input_names
    feeds: dict[str, np.ndarray] = {}
    for arg in input_args:
        name, path = _name_value(arg, "--input")
        path, key = _npz_key(path)
        data = _load_array_file(path)
        if key is not None and not isinstance(data, dict):
            raise UsageError(f"--input {arg!r}: {path} is a .npy file; ':{key}' picks an array "
                             "of an .npz file")
        if key is not None and name is None:
            if len(names) != 1:
                raise CLIError(f"the model has {len(names)} inputs {names}: write --input "
                               f"NAME={path}:{key}")
            name = names[0]
        if isinstance(data, dict):
            if name is not None:
                want = name if key is None else key
                if want not in data:
                    hint = "" if key is not None else (
                        f"; map one to the input with --input {name}={path}:KEY")
                    raise UsageError(f"{path} has no array named {want!r} (its keys are "
                                     f"{list(data)}){hint}")
                feeds[name] = data[want]
            else:
                for k, arr in data.items():
                    if k in names:
                        feeds[k] = arr
        else:
            if name is None:
                if len(names) != 1:
                    raise CLIError(
                        f"the model has {len(names)} inputs {names}: write --input NAME=FILE.npy"
                    )
                name = names[0]
            feeds[name] = data
    unknown = [k for k in feeds if k not in names]
    if unknown:
        raise InputError(f"unknown input name(s) {unknown}; the model's inputs are {names}")
    shapes: dict[str, tuple[int, ...]] = {}
    for arg in shape_args:
        name, text = _name_value(arg, "--shape")
        if name is None:
            if len(names) != 1:
                raise CLIError(f"the model has {len(names)} inputs: write --shape NAME=1x3x224x224")
            name = names[0]
        if name not in names:
            raise InputError(f"--shape names unknown input {name!r}; inputs are {names}")
        shapes[name] = _parse_shape(text)
    missing = [n for n in names if n not in feeds]
    if missing and not random_missing:
        raise InputError(
            f"no data for input(s) {missing}: pass --input NAME=FILE.npy, or --random to use "
            "random data"
        )
    rng = np.random.default_rng(seed)
    for detail in interp.get_input_details():
        name = detail["name"]
        if name in feeds:
            continue
        sig = [int(d) for d in detail["shape_signature"]]
        if name in shapes:
            shape = shapes[name]
        elif any(d < 0 for d in sig):
            named = [n for n in detail["dim_names"] or [] if n]
            dims = f" ({', '.join(named)})" if named else ""
            example = "x".join(str(d if d >= 0 else 1) for d in sig)
            if not dynamic_default:
                raise InputError(
                    f"input '{name}' has dynamic dimensions {tuple(sig)}{dims}: give its shape "
                    f"with --shape {name}={example}")
            shape = tuple(d if d >= 0 else 1 for d in sig)
            print(f"edgert: note: input '{name}' has dynamic dimensions {tuple(sig)}{dims}; "
                  f"using {example} (set it with --shape {name}=...)", file=sys.stderr)
        else:
            shape = tuple(sig)
        feeds[name] = _random_array(rng, shape, np.dtype(detail["dtype"]))
    return feeds


def _random_array(rng: np.random.Generator, shape, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(0, 10, size=shape).astype(dtype)
    raise CLIError(f"cannot make random data of dtype {dtype}; pass --input")


def _summarize(name: str, arr) -> str:
    if arr is None:
        return f"{name}: empty optional"
    if isinstance(arr, dict):
        items = list(arr.items())
        shown = ", ".join(f"{k!r}: {float(v):.5g}" if np.asarray(v).dtype.kind == "f" else
                          f"{k!r}: {np.asarray(v).item()!r}" for k, v in items[:8])
        more = f", ... ({len(items)} keys)" if len(items) > 8 else ""
        return f"{name}: map of {len(items)} key(s) {{{shown}{more}}}"
    if isinstance(arr, list):
        lines = [f"{name}: sequence of {len(arr)} value(s)"]
        lines += ["  " + _summarize(f"[{i}]", x).replace("\n", "\n  ") for i, x in
                  enumerate(arr[:3])]
        if len(arr) > 3:
            lines.append(f"  ... and {len(arr) - 3} more")
        return "\n".join(lines)
    head = f"{name}: {arr.dtype} {tuple(arr.shape)}"
    if arr.size == 0:
        return head + " (empty)"
    if arr.dtype.kind in "fiub":
        flat = arr.reshape(-1)
        with np.printoptions(precision=5, suppress=True, threshold=8, edgeitems=4):
            body = np.array2string(flat[:8])
        extra = ""
        if arr.dtype.kind == "f":
            extra = f" min={np.nanmin(arr):.5g} max={np.nanmax(arr):.5g} mean={np.nanmean(arr):.5g}"
            if arr.ndim == 2 and 1 < arr.shape[1] <= 1000:
                extra += f"\n  argmax per row: {np.argmax(arr, axis=1).tolist()[:32]}"
        return f"{head}{extra}\n  first values: {body}"
    return head


def _npz_entries(outputs: dict) -> dict[str, np.ndarray]:
    """Outputs as plain arrays for ``np.savez`` (loadable without pickle): a sequence's tensors
    as ``name[i]``, a map as ``name.keys`` and ``name.values`` (a sequence of maps:
    ``name[i].keys``...), an empty optional left out."""
    entries: dict[str, np.ndarray] = {}

    def put(name: str, value) -> None:
        if value is None:
            return
        if isinstance(value, dict):
            keys = list(value)
            entries[f"{name}.keys"] = np.array(keys, dtype=str if keys and
                                               isinstance(keys[0], str) else np.int64)
            entries[f"{name}.values"] = np.array([value[k] for k in keys])
        elif isinstance(value, list):
            for i, x in enumerate(value):
                put(f"{name}[{i}]", x)
        else:
            arr = np.asarray(value)
            entries[name] = arr.astype(str) if arr.dtype == object else arr

    for name, value in outputs.items():
        put(name, value)
    return entries


def _rss_peak_bytes() -> int:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except Exception:  # pragma: no cover - non-POSIX
        return 0


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


# ----- commands ---------------------------------------------------------------------------------
def cmd_convert(args: argparse.Namespace) -> int:
    src = pathlib.Path(args.model)
    if not src.exists():
        raise CLIError(f"no such file: {args.model}")
    _require_onnx_file(src)
    out = _output_path(args.output if args.output else src.with_suffix(".edgert"))
    convert = _converter()
    t0 = time.perf_counter()
    # --json: stdout holds the JSON alone; the --verbose report goes to stderr
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        data = convert(str(src), str(out), level=args.level, verbose=args.verbose)
    dt = time.perf_counter() - t0
    if not args.json:
        print(f"wrote {out} ({_format_bytes(len(data))}) in {dt * 1000:.0f} ms")
        return 0
    from edgert.format import read_model

    t0 = time.perf_counter()
    model = read_model(data)
    t_read = time.perf_counter() - t0
    hist: dict[str, int] = {}
    for op in model.main.operators:
        key = f"{op.domain}.{op.op_type}" if op.domain else op.op_type
        hist[key] = hist.get(key, 0) + 1
    onnx_nodes = None
    try:
        import onnx

        onnx_nodes = len(onnx.load(str(src), load_external_data=False).graph.node)
    except Exception:  # the conversion read it; a count is not worth failing over
        pass
    result = {
        "input": str(src),
        "output": str(out),
        "level": args.level,
        "onnx_bytes": src.stat().st_size,
        "edgert_bytes": len(data),
        "convert_ms": dt * 1e3,
        "read_back_ms": t_read * 1e3,
        "onnx_nodes": onnx_nodes,
        "operators": len(model.main.operators),
        "op_histogram": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
    print(json.dumps(result, indent=2))
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    """``edgert optimize``: ONNX -> IR -> optimizer -> ONNX, checked with onnx.checker."""
    src = pathlib.Path(args.model)
    if not src.exists():
        raise CLIError(f"no such file: {args.model}")
    _require_onnx_file(src)
    _output_path(args.output)
    _require_convert_extra("optimize")
    try:
        import onnx

        from edgert.importer import export_onnx, import_onnx
        from edgert.optimizer import optimize
    except ModuleNotFoundError as exc:
        raise CLIError(f"optimize needs the convert extra ({exc.name} is not installed)") from None
    # nodes of custom domains are kept as they are and written back (convert refuses them)
    graph = import_onnx(str(src), keep_custom=True)
    report = optimize(graph, args.level, verbose=args.verbose, allow_fused=args.allow_fused)
    model = export_onnx(graph)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise EdgeRTError(f"the optimized model does not pass onnx.checker: {exc}") from None
    onnx.save(model, args.output)
    print(f"wrote {args.output}: {report.nodes_before} -> {report.nodes_after} nodes "
          f"({report.seconds * 1000:.0f} ms)")
    return 0


def _json_value(name: str, value, max_values: int) -> dict[str, Any]:
    """One output for ``run --json``: dtype and shape, and the values when at most
    ``max_values`` of them (a sequence as its items, a map as its keys and values)."""
    if value is None:
        return {"name": name, "kind": "optional", "value": None}
    if isinstance(value, dict):
        keys = list(value)
        d: dict[str, Any] = {"name": name, "kind": "map", "size": len(keys)}
        if len(keys) <= max_values:
            d["keys"] = [k.item() if isinstance(k, np.generic) else k for k in keys]
            d["values"] = [np.asarray(value[k]).tolist() for k in keys]
        return d
    if isinstance(value, list):
        return {"name": name, "kind": "sequence", "length": len(value),
                "items": [_json_value(f"{name}[{i}]", x, max_values) for i, x in
                          enumerate(value[:max_values])]}
    arr = np.asarray(value)
    d = {"name": name, "dtype": "string" if arr.dtype.kind in "OUS" else str(arr.dtype),
         "shape": list(arr.shape)}
    if arr.size <= max_values:
        if arr.dtype.kind in "fiub":
            d["values"] = arr.tolist()
        else:
            d["values"] = arr.astype(str).tolist()
    return d


def _json_safe(x):
    """``x`` with NaN and ±inf as the strings "nan", "inf", "-inf" (not JSON numbers)."""
    if isinstance(x, float):
        return x if np.isfinite(x) else str(x)
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    return x


_JSON_MAX_VALUES = 100  # run --json: the values of an output with at most this many elements


def cmd_run(args: argparse.Namespace) -> int:
    from edgert.runtime import Interpreter

    if args.output:
        _output_path(args.output)
    with _compiling() as progress:  # (a fresh machine compiles kernels: progress on stderr)
        t0 = time.perf_counter()
        model, kind = _read_model_arg(args.model)  # (constant folding may run kernels)
        t_convert = time.perf_counter() - t0
        t0 = time.perf_counter()
        interp = Interpreter(model, num_threads=args.threads)
        t_load = time.perf_counter() - t0
        feeds = _collect_feeds(interp, args.input or [], args.shape or [], args.seed,
                               args.random)
        t1 = time.perf_counter()
        with _step_hook(interp, progress):
            outputs = interp.run(feeds)
        t_run = time.perf_counter() - t1
    result: dict[str, Any] = {"model": args.model, "format": kind}
    if kind == "onnx":
        result["convert_ms"] = t_convert * 1e3
    result.update({"load_ms": t_load * 1e3, "first_run_ms": t_run * 1e3,
                   "inputs": {k: {"dtype": str(v.dtype), "shape": list(v.shape)}
                              for k, v in feeds.items()}})
    if args.output:
        arrays = _npz_entries(outputs)
        np.savez(args.output, **arrays)
        result["saved"] = {"path": args.output, "arrays": len(arrays)}
        if not args.json:
            print(f"saved {len(outputs)} output(s) to {args.output} ({len(arrays)} array(s))")
    if not args.json:
        for name, arr in outputs.items():
            print(_summarize(name, arr))
        if kind == "onnx":
            print(f"convert (in memory) {t_convert * 1000:.1f} ms")
        print(f"load {t_load * 1000:.1f} ms, first run {t_run * 1000:.1f} ms"
              " (includes kernel compilation or cache load on a fresh machine)")
    if args.time_runs:
        times = []
        for _ in range(args.time_runs):
            t = time.perf_counter()
            interp.run(feeds)
            times.append(time.perf_counter() - t)
        result["steady_state"] = {"runs": args.time_runs,
                                  "median_ms": statistics.median(times) * 1e3,
                                  "min_ms": min(times) * 1e3}
        if not args.json:
            print(f"steady state over {args.time_runs} runs:"
                  f" median {statistics.median(times) * 1e3:.3f} ms,"
                  f" min {min(times) * 1e3:.3f} ms")
    if args.json:
        result["outputs"] = [_json_value(k, v, _JSON_MAX_VALUES) for k, v in outputs.items()]
        print(json.dumps(_json_safe(result), indent=2, allow_nan=False))
    return 0


def _onnx_value_info(vi) -> dict[str, Any]:
    """An ONNX graph input/output: name, dtype, shape (a named dim by its name, an unknown one
    as "?"), or the kind of a non-tensor value."""
    from onnx import TensorProto

    t = vi.type
    which = t.WhichOneof("value")
    if which == "tensor_type":
        tt = t.tensor_type
        try:
            from onnx.helper import tensor_dtype_to_np_dtype

            np_dtype = np.dtype(tensor_dtype_to_np_dtype(tt.elem_type))
            dtype = "string" if np_dtype == np.dtype(object) else str(np_dtype)
        except Exception:  # undefined, string, or a type numpy has no name for
            dtype = TensorProto.DataType.Name(tt.elem_type).lower()
        d: dict[str, Any] = {"name": vi.name, "dtype": dtype}
        d["shape"] = None if not tt.HasField("shape") else [
            dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?")
            for dim in tt.shape.dim]
        return d
    kind = {"sequence_type": "sequence", "map_type": "map", "optional_type": "optional",
            "sparse_tensor_type": "sparse tensor"}.get(which, str(which))
    return {"name": vi.name, "kind": kind}


def _inspect_onnx(p: pathlib.Path) -> dict[str, Any]:
    """``edgert inspect model.onnx``: the ONNX file as it is, and which of its ops the edgert
    runtime cannot run (from a trial conversion without optimization)."""
    _require_convert_extra()
    import onnx
    from onnx import helper

    try:
        m = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise CLIError(f"cannot read {p} as an ONNX model: {exc}") from None
    hist: dict[str, int] = {}
    body_nodes = 0
    stack = [(m.graph, 0)]
    while stack:
        g, depth = stack.pop()
        for node in g.node:
            body_nodes += depth > 0
            dom = node.domain if node.domain not in ("", "ai.onnx") else ""
            key = f"{dom}.{node.op_type}" if dom else node.op_type
            hist[key] = hist.get(key, 0) + 1
            for attr in node.attribute:
                if attr.HasField("g"):
                    stack.append((attr.g, depth + 1))
                stack.extend((sub, depth + 1) for sub in attr.graphs)
    init_names = {t.name for t in m.graph.initializer}
    params = weight_bytes = 0
    for t in m.graph.initializer:
        n = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
        params += n
        try:
            weight_bytes += n * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        except Exception:  # strings, or a type numpy has no dtype for
            pass
    unsupported: list[dict[str, str]] = []
    conversion_error = None
    from edgert.converter import convert
    from edgert.errors import UnsupportedOpError

    try:
        convert(m if not _has_external_data(m) else str(p), level=0, base_dir=p.parent)
    except UnsupportedOpError as exc:
        unsupported = [{"op_type": op, "name": name, "reason": why} for op, name, why in exc.ops]
        if not unsupported:
            conversion_error = str(exc).splitlines()[0]
    except EdgeRTError as exc:
        conversion_error = str(exc).splitlines()[0]
    return {
        "file": str(p),
        "format": "onnx",
        "file_bytes": p.stat().st_size,
        "ir_version": m.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in m.opset_import},
        "producer": " ".join(x for x in (m.producer_name, m.producer_version) if x),
        "graph_name": m.graph.name,
        "inputs": [_onnx_value_info(vi) for vi in m.graph.input if vi.name not in init_names],
        "outputs": [_onnx_value_info(vi) for vi in m.graph.output],
        "nodes": len(m.graph.node),
        "nodes_in_subgraphs": body_nodes,
        "op_histogram": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "parameters": params,
        "weight_bytes": weight_bytes,
        "initializers": len(m.graph.initializer),
        "metadata": {e.key: e.value for e in m.metadata_props},
        "supported": not unsupported and conversion_error is None,
        "unsupported_ops": unsupported,
        "conversion_error": conversion_error,
    }


def _has_external_data(m) -> bool:
    from onnx import TensorProto

    return any(t.data_location == TensorProto.EXTERNAL for t in m.graph.initializer)


def _print_onnx_info(info: dict[str, Any]) -> None:
    p = pathlib.Path(info["file"])
    producer = f", from {info['producer']}" if info["producer"] else ""
    print(f"{p.name}: onnx model (as written; --converted shows the .edgert graph), "
          f"{_format_bytes(info['file_bytes'])}{producer}")
    opsets = ", ".join(f"{k} {v}" for k, v in info["opsets"].items())
    print(f"ir version {info['ir_version']}, opsets: {opsets}")
    for key in ("inputs", "outputs"):
        print(f"{key}:")
        for d in info[key]:
            print(f"  {d['name']}: {d['kind']}" if "kind" in d else
                  f"  {d['name']}: {d['dtype']} {d['shape']}")
    body = (f" (+{info['nodes_in_subgraphs']} in subgraphs)" if info["nodes_in_subgraphs"]
            else "")
    print(f"nodes: {info['nodes']}{body}  parameters: {info['parameters']:,} "
          f"({_format_bytes(info['weight_bytes'])})")
    print("op histogram:")
    bad = {d["op_type"] for d in info["unsupported_ops"]}
    for op, n in info["op_histogram"].items():
        mark = "  (unsupported)" if op.rsplit(".", 1)[-1] in bad else ""
        print(f"  {op:<28} {n}{mark}")
    if info["unsupported_ops"]:
        print(f"unsupported by edgert ({len(info['unsupported_ops'])}):")
        for d in info["unsupported_ops"]:
            print(f"  {d['op_type']} '{d['name']}': {d['reason']}")
    elif info["conversion_error"]:
        print(f"does not convert: {info['conversion_error']}")
    if info["metadata"]:
        print("metadata:")
        for k, v in info["metadata"].items():
            print(f"  {k}: {v}")


def cmd_inspect(args: argparse.Namespace) -> int:
    from edgert.format import read_model

    p = pathlib.Path(args.model)
    if p.suffix.lower() == ".onnx" and not args.converted and p.is_file() and not _is_edgert(p):
        info = _inspect_onnx(p)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_onnx_info(info)
        return 0
    model_arg, kind = _read_model_arg(args.model)
    model = read_model(model_arg)
    g = model.main
    hist: dict[str, int] = {}
    for op in g.operators:
        key = f"{op.domain}.{op.op_type}" if op.domain else op.op_type
        hist[key] = hist.get(key, 0) + 1
    params = sum(int(t.data.size) for t in g.tensors if t.data is not None)
    weight_bytes = sum(int(t.data.nbytes) for t in g.tensors if t.data is not None)

    def describe(i: int) -> dict[str, Any]:
        t = g.tensors[i]
        from edgert import dtypes

        shape = [
            (t.shape_signature[k] if t.shape_signature and t.shape_signature[k] else "?")
            if d < 0 else d
            for k, d in enumerate(t.shape)
        ]
        d = {"name": t.name, "dtype": dtypes.name(t.dtype),
             "shape": None if t.unknown_rank else shape}
        if t.kind:  # a sequence / optional value: dtype is its tensors' element type
            from edgert.format.model import KIND_NAMES

            d["kind"] = KIND_NAMES[t.kind]
        return d

    info = {
        "file": str(p),
        "format": kind,
        "file_bytes": p.stat().st_size,
        "inputs": [describe(i) for i in g.inputs],
        "outputs": [describe(i) for i in g.outputs],
        "operators": len(g.operators),
        "op_histogram": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "parameters": params,
        "weight_bytes": weight_bytes,
        "tensors": len(g.tensors),
        "subgraphs": len(model.subgraphs),
        "metadata": model.metadata,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{p.name}: {kind} model, {_format_bytes(info['file_bytes'])}")
    for key in ("inputs", "outputs"):
        print(f"{key}:")
        for d in info[key]:
            if "kind" in d:
                print(f"  {d['name']}: {d['kind']} of {d['dtype']}")
                continue
            print(f"  {d['name']}: {d['dtype']} {d['shape']}")
    print(f"operators: {info['operators']}  parameters: {params:,} ({_format_bytes(weight_bytes)})")
    print("op histogram:")
    for op, n in info["op_histogram"].items():
        print(f"  {op:<28} {n}")
    if model.metadata:
        print("metadata:")
        for k, v in model.metadata.items():
            print(f"  {k}: {v}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.runs is not None and args.runs < 1:
        raise CLIError("--runs must be at least 1")
    if args.warmup < 0:
        raise CLIError("--warmup must be >= 0")
    from edgert.runtime import Interpreter

    with _compiling() as progress:  # (a fresh machine compiles kernels: progress on stderr)
        t_import = time.perf_counter()
        model, kind = _read_model_arg(args.model)  # (constant folding may run kernels)
        t_convert = time.perf_counter() - t_import
        t0 = time.perf_counter()
        # device="cuda": CudaInterpreter.invoke synchronizes the GPU before returning (issue 8).
        interp = Interpreter(model, num_threads=args.threads, device=args.device)
        t_load = time.perf_counter() - t0
        feeds = _collect_feeds(interp, args.input or [], args.shape or [], args.seed, True,
                               dynamic_default=True)
        for name, arr in feeds.items():
            interp.resize_tensor_input(name, arr.shape)
        t0 = time.perf_counter()
        interp.allocate_tensors()
        t_alloc = time.perf_counter() - t0
        for name, arr in feeds.items():
            interp.set_tensor(name, arr)
        t0 = time.perf_counter()
        with _step_hook(interp, progress):
            interp.invoke()
        t_first = time.perf_counter() - t0
    layer = _threading_layer() if args.device == "cpu" else None
    if layer in _SLOW_LAYERS:
        print(f"edgert: warning: {_SLOW_LAYERS[layer]}", file=sys.stderr)
    for _ in range(args.warmup):
        interp.invoke()
    times: list[float] = []
    deadline = time.perf_counter() + args.duration if args.duration else None
    runs = args.runs if args.runs is not None else (None if deadline else 50)
    progress = _progress(runs, disable=args.json or not sys.stderr.isatty())
    while True:
        t = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t)
        progress.update(1)
        if runs is not None and len(times) >= runs:
            break
        if deadline is not None and time.perf_counter() >= deadline:
            break
    progress.close()
    profile_rows = None
    if args.profile:
        from edgert.runtime.profiling import profile_ops

        profile_rows = profile_ops(interp, max(1, min(len(times), 20)))
    arr = np.array(times) * 1e3
    result = {
        "model": args.model,
        "device": args.device,
        "threads": args.threads,
        "convert_ms": t_convert * 1e3 if kind == "onnx" else 0.0,
        "load_ms": t_load * 1e3,
        "allocate_ms": t_alloc * 1e3,
        "first_inference_ms": t_first * 1e3,
        "runs": len(times),
        "latency_ms": {
            "min": float(arr.min()),
            "median": float(np.median(arr)),
            "mean": float(arr.mean()),
            "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99)),
            "max": float(arr.max()),
            "std": float(arr.std()),
        },
        "threading_layer": layer,
        "arena_bytes": interp.stats.arena_bytes,
        "peak_rss_bytes": _rss_peak_bytes(),
        "input_shapes": {k: list(v.shape) for k, v in feeds.items()},
    }
    if profile_rows is not None:
        result["profile"] = [
            {"op_type": r.op_type, "name": r.name, "total_ms": r.total_s * 1e3,
             "mean_ms": r.mean_s * 1e3, "calls": r.calls}
            for r in profile_rows
        ]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if kind == "onnx":
        print(f"convert (in memory): {result['convert_ms']:.1f} ms")
    print(f"load: {result['load_ms']:.2f} ms   allocate: {result['allocate_ms']:.2f} ms   "
          f"first inference: {result['first_inference_ms']:.2f} ms")
    lat = result["latency_ms"]
    print(f"latency over {len(times)} runs (ms): min {lat['min']:.3f}  median {lat['median']:.3f}  "
          f"mean {lat['mean']:.3f}  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  "
          f"max {lat['max']:.3f}  std {lat['std']:.3f}")
    print(f"arena: {_format_bytes(result['arena_bytes'])}   peak RSS: "
          f"{_format_bytes(result['peak_rss_bytes'])}"
          + (f"   threading layer: {layer}" if layer else ""))
    if profile_rows is not None:
        from edgert.runtime.profiling import format_profile

        print(f"per-op profile ({profile_rows[0].calls if profile_rows else 0} runs):")
        print(format_profile(profile_rows, limit=None if args.profile_all else 30))
    return 0


_SLOW_LAYERS = {
    "workqueue": "Numba runs the parallel kernels on its 'workqueue' threading layer, not "
                 "OpenMP: slower, and not safe to run from several threads at once; install "
                 "OpenMP (libgomp1 on Debian/Ubuntu) so that Numba picks 'omp'",
    "tbb": "Numba runs the parallel kernels on its 'tbb' threading layer, not OpenMP: latency "
           "may differ from an OpenMP machine; set NUMBA_THREADING_LAYER=omp (needs libgomp1) "
           "to measure with OpenMP",
}


def _threading_layer() -> str | None:
    """Numba's threading layer ('omp', 'tbb', 'workqueue'), known after a parallel kernel ran;
    None before that (a model without parallel kernels)."""
    try:
        import numba

        return numba.threading_layer()
    except Exception:  # ValueError: no parallel kernel has run yet
        return None


def cmd_warmup(args: argparse.Namespace) -> int:
    """``edgert warmup``: compile kernels into the Numba cache ahead of first use."""
    from edgert.warmup import warmup

    if args.all and args.models:
        raise UsageError("give models or --all, not both")
    for m in args.models:
        p = pathlib.Path(m)
        if not p.exists():
            raise CLIError(f"no such file: {m}")
        if p.is_dir():
            raise CLIError(f"{m} is a folder, expected a model file")
    if any(pathlib.Path(m).suffix.lower() == ".onnx" and not _is_edgert(m)
           for m in args.models) or not args.models:
        _require_convert_extra("warming up ONNX models and the built-in set")
    shapes = {}
    for text in args.shape or []:
        name, dims = _name_value(text, "--shape")
        if name is None:
            raise UsageError(f"bad --shape {text!r}: expected NAME=DIMS, e.g. input=1x3x224x224")
        shapes[name] = _parse_shape(dims)
    if shapes and not args.models:
        raise UsageError("--shape needs models")
    warmup(args.models, threads=args.threads, all_kinds=args.all, shapes=shapes or None)
    return 0


@contextlib.contextmanager
def _compiling():
    """Compile progress on stderr for the block (see :mod:`edgert.warmup`): shown only while
    kernels compile, one line when stderr is not a terminal."""
    from edgert.warmup import compile_progress

    with compile_progress(show=True) as progress:
        yield progress


def _step_hook(interp, progress):
    from edgert.warmup import step_hook

    return step_hook(interp, progress)


def cmd_quantize_json(args: argparse.Namespace) -> int:
    """``edgert quantize``, with ``--json``: the report as one JSON object on stdout."""
    from edgert.quantization.cli import cmd_quantize, run_quantize

    if not args.json:
        with _compiling():  # (calibration runs the float model: kernels may compile)
            return cmd_quantize(args)
    import dataclasses

    with _compiling():
        rep = run_quantize(args)
    result = {"output": args.output, "format": args.format, **dataclasses.asdict(rep),
              "num_int8_ops": rep.num_int8_ops, "warnings": rep.warnings()}
    result["float_ops"] = [{"op_type": op, "name": name, "why": why}
                           for op, name, why in rep.float_ops]
    result["nonfinite"] = [{"tensor": name, "what": what} for name, what in rep.nonfinite]
    result["sqnr"] = [{"tensor": name, "db": float(db)} for name, db in rep.sqnr]
    # (an exact tensor has inf dB: "inf", not a JSON number)
    print(json.dumps(_json_safe(result), indent=2, allow_nan=False))
    return 0


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int | None, disable: bool):
    if disable:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        return _NoProgress()
    return tqdm(total=total, unit="run", leave=False)


# ----- parser -----------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from edgert import __version__

    parser = argparse.ArgumentParser(
        prog="edgert",
        description="Convert ONNX models to .edgert and run them on the edgert runtime.",
    )
    parser.add_argument("--version", action="version", version=f"edgert {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("convert", help="convert an ONNX model to .edgert")
    p.add_argument("model", help="input .onnx file")
    p.add_argument("-o", "--output", help="output .edgert file (default: next to the input)")
    p.add_argument("--level", type=int, choices=(0, 1, 2, 3), default=2,
                   help="graph optimization level: 0 none, 1 basic, 2 extended (default; 3 is "
                        "the same as 2)")
    p.add_argument("--verbose", action="store_true", help="print the optimizer's per-pass report")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: paths, sizes, time, op counts")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("optimize", help="optimize an ONNX model, write ONNX")
    p.add_argument("model", help="input .onnx file")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--level", type=int, choices=(0, 1, 2, 3), default=2,
                   help="optimization level: 0 none, 1 basic, 2 extended (default; 3 is the "
                        "same as 2)")
    p.add_argument("--allow-fused", action="store_true",
                   help="allow edgert-domain fused ops (only the edgert runtime runs them)")
    p.add_argument("--verbose", action="store_true", help="print the per-pass report")
    p.set_defaults(func=cmd_optimize)

    def add_inputs(p: argparse.ArgumentParser) -> None:
        p.add_argument("--input", action="append", metavar="NAME=FILE",
                       help="input data from .npy (NAME=FILE.npy) or .npz (FILE.npz maps "
                            "names; NAME=FILE.npz:KEY maps one array to input NAME); repeatable")
        p.add_argument("--shape", action="append", metavar="NAME=DIMS",
                       help="shape of a random input with dynamic dims, e.g. input=1x3x224x224")
        p.add_argument("--seed", type=int, default=0, help="seed for random inputs (default 0)")
        p.add_argument("--threads", type=_positive_int, default=None,
                       help="compute threads (default: the physical cores)")

    p = sub.add_parser("run", help="run a model once and print or save its outputs")
    p.add_argument("model", help=".edgert or .onnx file")
    add_inputs(p)
    p.add_argument("--random", action="store_true", help="random data for inputs not given")
    p.add_argument("-o", "--output", help="save all outputs to this .npz file")
    p.add_argument("--time", dest="time_runs", type=_positive_int, default=0, metavar="N",
                   help="also time N further runs and print the median")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: timings, and each output's dtype, shape and "
                        f"(up to {_JSON_MAX_VALUES} elements) values")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("inspect", help="show a model's inputs, outputs, ops and size (an .onnx "
                                       "file as written, with the ops edgert cannot run)")
    p.add_argument("model", help=".edgert or .onnx file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--converted", action="store_true",
                   help="for an .onnx file: show the converted, optimized .edgert graph instead "
                        "of the ONNX file as written")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("bench", help="measure load time and inference latency")
    p.add_argument("model", help=".edgert or .onnx file (.onnx is converted in memory)")
    add_inputs(p)
    p.add_argument("--warmup", type=int, default=5, help="untimed runs after the first (default 5)")
    p.add_argument("--runs", type=int, default=None, help="timed runs (default 50)")
    p.add_argument("--duration", type=float, default=None,
                   help="time runs for this many seconds instead (with --runs: whichever first)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where to run (cuda needs numba-cuda and a GPU; default cpu)")
    p.add_argument("--profile", action="store_true",
                   help="also time every operator and print a per-op table (slowest first)")
    p.add_argument("--profile-all", action="store_true",
                   help="with --profile: list every op instead of the 30 slowest")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("warmup", help="compile the CPU kernels ahead of first use")
    p.add_argument("models", nargs="*",
                   help=".onnx/.edgert models to run once: exactly their kernels are compiled "
                        "(default: a built-in set of small float32 CNNs)")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS",
                   help="run input NAME at this shape, as the application will (dynamic dims "
                        "not given are 1); repeatable")
    p.add_argument("--all", action="store_true",
                   help="without models: the float32 and int8 built-in sets (CNNs with "
                        "depthwise convolutions, MLPs), at two sizes")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="compute threads (default: the physical cores)")
    p.set_defaults(func=cmd_warmup)

    from edgert.serve.cli import add_parser as add_serve_parser  # edgert serve (serve extra)

    add_serve_parser(sub)

    from edgert.quantization.cli import add_quantize_parser  # issue 5: edgert quantize

    add_quantize_parser(sub)
    p = sub.choices["quantize"]
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: the output path and the report's fields")
    p.set_defaults(func=cmd_quantize_json)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    restore_sigint = _interrupt_handler()
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except EdgeRTError as exc:
        print(f"edgert: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):  # `edgert run ... | head`: the reader left
            _silence_stdout()
            return 141  # 128 + SIGPIPE, as a shell tool killed by the signal
        where = f": {exc.filename}" if exc.filename else ""
        print(f"edgert: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # (also raised between kernels while Numba compiles)
        print("edgert: interrupted", file=sys.stderr)
        return 130
    finally:
        restore_sigint()


def _interrupt_handler():
    """Ctrl-C that stops a kernel compile promptly (see edgert.warmup): returns the function
    that restores the previous handler. Only ``signal`` and ``threading`` are imported."""
    from edgert.warmup import install_interrupt_handler

    return install_interrupt_handler()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
