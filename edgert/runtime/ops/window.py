"""Window semantics shared by every device's Conv, ConvTranspose and pooling kernels: attribute
checks, auto-padding and output sizes, as the newest ONNX opset defines them. Nothing here runs
on the data; the CPU and CUDA kernels both build their :class:`Window` here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from edgert.errors import DTypeError, ShapeError
from edgert.runtime.registry import Kernel, TensorInfo

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


# Geo: the window as the compiled kernels take it. A named tuple of 21 integers, every spatial
# rank extended to three axes at the front (depth, height, width; a 2-D op has
# kd = sd = dd = d = od = 1 and no depth padding). Numba passes it by value as a typed tuple, so
# a kernel reads ``geo.kh`` or ``geo.ow`` with no unpacking and no array in memory; the CUDA
# kernels upload ``geo.as_array()``, in the field order below.
class Geo(NamedTuple):
    """Kernel size, strides, dilations and begin pads per axis, input and output sizes, end
    pads; each as (depth, height, width)."""

    kd: int
    kh: int
    kw: int
    sd: int
    sh: int
    sw: int
    dd: int
    dh: int
    dw: int
    pd: int
    ph: int
    pw: int
    d: int
    h: int
    w: int
    od: int
    oh: int
    ow: int
    pde: int
    phe: int
    pwe: int

    def as_array(self) -> np.ndarray:
        """The 21 values as ``int64`` (what the CUDA kernels upload)."""
        return np.array(self, dtype=np.int64)


# What the compiled CPU kernels take: a one-element structured array of the same named fields.
# A kernel reads ``geo = geo_a[0]`` once, then ``geo.kh``. (Numba types a tuple argument in
# Python on every call, ~2.5 µs, where an array's type comes from a cached fingerprint.)
GEO_DTYPE = np.dtype([(name, np.int64) for name in Geo._fields])


@functools.lru_cache(maxsize=4096)
def packed(geo: Geo) -> np.ndarray:
    """``geo`` as the compiled kernels take it (shape ``(1,)``, dtype :data:`GEO_DTYPE`)."""
    a = np.zeros(1, GEO_DTYPE)
    a[0] = tuple(geo)
    return a


def float_dtype(kernel: Kernel, infos: list[tuple[TensorInfo | None, str]]) -> np.dtype:
    """The common float32/float64 dtype of the given inputs, or a DTypeError naming the op."""
    first = infos[0][0].dtype
    for info, name in infos:
        if info is None:
            continue
        dt = np.dtype(info.dtype)
        if dt not in FLOAT_DTYPES:
            raise kernel.error(
                f"input {name} has dtype {dt}; this kernel supports float32 and float64", DTypeError
            )
        if dt != np.dtype(first):
            raise kernel.error(
                f"input {name} has dtype {dt} but input {infos[0][1]} has {np.dtype(first)}",
                DTypeError,
            )
    return np.dtype(first)


def int_list_attr(
    kernel: Kernel, name: str, length: int, default: int | None, minimum: int
) -> list[int]:
    """An integer-list attribute of exactly ``length`` items, each ``>= minimum``."""
    value = kernel.attr(name)
    if value is None or (len(value) == 0 and default is not None):
        if default is None:
            raise kernel.error(f"attribute '{name}' is required")
        return [default] * length
    vals = [int(v) for v in value]
    if len(vals) != length:
        raise kernel.error(f"attribute '{name}' has {len(vals)} values, expected {length}")
    for v in vals:
        if v < minimum:
            raise kernel.error(f"attribute '{name}' = {vals}: every value must be >= {minimum}")
    return vals


def auto_pad_attr(kernel: Kernel) -> str:
    mode = kernel.attr("auto_pad", "NOTSET")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in AUTO_PADS:
        raise kernel.error(
            f"attribute 'auto_pad' = {mode!r}; expected one of {', '.join(AUTO_PADS)}"
        )
    return mode


@dataclass(frozen=True)
class Window:
    """Sliding-window geometry over the spatial axes (``nsp`` of them) of one op."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def geo(self) -> Geo:
        """The geometry as the compiled kernels take it, extended to 3 spatial axes at the
        front (see :class:`Geo`)."""
        pad = 3 - len(self.kernel)
        ones, zeros = [1] * pad, [0] * pad
        vals = (
            ones + list(self.kernel),
            ones + list(self.strides),
            ones + list(self.dilations),
            zeros + list(self.pads_begin),
            ones + list(self.in_shape),
            ones + list(self.out_shape),
            zeros + list(self.pads_end),
        )
        return Geo(*(int(v) for group in vals for v in group))


def as3d(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A spatial shape of rank 1..3 extended to 3 axes by leading 1s."""
    return (1,) * (3 - len(shape)) + tuple(shape)  # type: ignore[return-value]


def sliding_window(
    kernel: Kernel,
    in_shape: tuple[int, ...],
    kshape: tuple[int, ...],
    ceil_mode: bool = False,
    check_pad_smaller_than_kernel: bool = False,
) -> Window:
    """Resolve strides, dilations, pads and ``auto_pad`` into a :class:`Window`.

    Output size per axis (ONNX Conv / pooling, newest opsets), with ``ext = (k - 1) * d + 1``:

    * explicit pads: ``floor((in + pb + pe - ext) / s) + 1``; with ``ceil_mode`` the ceiling, minus
      one when the last window would start inside the end padding;
    * ``VALID``: as explicit pads of 0. (With ``ceil_mode`` the spec's text gives one window fewer
      than onnxruntime and ONNX shape inference, which agree with each other; they are followed.)
    * ``SAME_*``: ``ceil(in / s)``, with total padding ``(out - 1) * s + ext - in`` split evenly,
      the odd element at the end (``SAME_UPPER``) or at the beginning (``SAME_LOWER``).

    Raises:
        KernelError: malformed attributes.
        ShapeError: the dilated kernel does not fit the padded input (an empty output).
    """
    nsp = len(in_shape)
    strides = int_list_attr(kernel, "strides", nsp, 1, 1)
    dilations = int_list_attr(kernel, "dilations", nsp, 1, 1)
    mode = auto_pad_attr(kernel)
    pads = int_list_attr(kernel, "pads", 2 * nsp, 0, 0)
    if check_pad_smaller_than_kernel and mode == "NOTSET":
        for i in range(nsp):
            if pads[i] >= kshape[i] or pads[i + nsp] >= kshape[i]:
                raise kernel.error(
                    f"pads {pads} must be smaller than kernel_shape {list(kshape)} on every axis"
                )
    pb, pe, out = [], [], []
    for i in range(nsp):
        n, k, s, d = in_shape[i], kshape[i], strides[i], dilations[i]
        ext = (k - 1) * d + 1
        if mode in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-n // s)
            total = max(0, (o - 1) * s + ext - n)
            head = total // 2 if mode == "SAME_UPPER" else total - total // 2
            b, e = head, total - head
        else:
            b, e = (pads[i], pads[i + nsp]) if mode == "NOTSET" else (0, 0)
            span = n + b + e - ext
            if span < 0:
                raise kernel.error(
                    f"spatial axis {i}: the kernel extent {ext} (kernel {k}, dilation {d}) is "
                    f"larger than the padded input {n + b + e} (input {n}, pads {b}+{e})",
                    ShapeError,
                )
            if ceil_mode:
                o = -(-span // s) + 1
                if (o - 1) * s >= n + b:  # the last window would start in the end padding
                    o -= 1
            else:
                o = span // s + 1
        if o <= 0:
            raise kernel.error(f"spatial axis {i}: empty output (input size {n})", ShapeError)
        pb.append(b)
        pe.append(e)
        out.append(o)
    return Window(
        tuple(kshape),
        tuple(strides),
        tuple(dilations),
        tuple(pb),
        tuple(pe),
        tuple(in_shape),
        tuple(out),
    )


def kernel_shape_attr(kernel: Kernel, w_spatial: tuple[int, ...]) -> None:
    """Check the optional ``kernel_shape`` attribute against the weight's spatial shape."""
    ks = kernel.attr("kernel_shape")
    if ks is not None and len(ks) > 0 and tuple(int(v) for v in ks) != tuple(w_spatial):
        raise kernel.error(
            f"attribute kernel_shape {list(ks)} does not match the weight's spatial shape "
            f"{list(w_spatial)}",
            ShapeError,
        )
