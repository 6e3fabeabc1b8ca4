"""Spectral operators: DFT (opset 17 and 20 forms) and STFT.

Signals carry their complex dimension last: ``[..., 1]`` is real, ``[..., 2]`` is (real, imag).
The transforms run in NumPy's pocketfft (``numpy.fft``) in the input's precision: complex64 for
float16/float32 signals, complex128 for float64. Computing a float32 signal in complex128 would
be slightly more accurate, but it disagrees with the ONNX conformance data (made with NumPy's
single-precision FFT) where an exact zero is expected as ~2e-7 rounding noise against an
absolute tolerance of 1e-7 (test_dft_inverse caught this).

* DFT: the importer rewrites opset 17's ``axis`` attribute into opset 20's scalar ``axis``
  input (:mod:`edgert.importer.upgrade`), so one kernel serves both. ``dft_length`` pads with
  zeros or truncates the signal along ``axis``; ``onesided`` keeps the ``n // 2 + 1``
  non-negative frequencies of a forward transform, and turns an inverse transform into the
  inverse of a one-sided spectrum (a real ``[..., 1]`` output of length ``dft_length``, by
  default ``2 * (bins - 1)``).
* STFT: frames of ``frame_length`` every ``frame_step`` samples, multiplied by ``window``, each
  transformed; output ``[batch, frames, bins, 2]``.
* MelWeightMatrix: the triangular mel filter bank that maps a one-sided spectrum to mel bands.
"""

from __future__ import annotations

import numpy as np

from edgert import dtypes
from edgert.errors import DTypeError, InputError, ShapeError
from edgert.runtime.kernels.cpu.misc import EagerKernel
from edgert.runtime.registry import KernelRegistry, TensorInfo


def _as_complex(x: np.ndarray) -> np.ndarray:
    """[..., 1|2] float -> [...] complex64 (float16/32) or complex128 (float64)."""
    ct = np.complex128 if x.dtype == np.float64 else np.complex64
    z = x[..., 0].astype(ct)
    if x.shape[-1] == 2:
        z.imag = x[..., 1]
    return z


def _as_pairs(z: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """[...] complex -> [..., 2] (real, imag) in ``dtype``."""
    return np.stack((z.real, z.imag), axis=-1).astype(dtype)


def _scalar_int(kernel: EagerKernel, info: TensorInfo | None, what: str) -> None:
    if info is None:
        return
    if np.dtype(info.dtype).kind not in "iu":
        raise kernel.error(f"{what} must be an integer, got {info.dtype}", DTypeError)
    if len(info.shape) > 1 or (len(info.shape) == 1 and info.shape[0] != 1):
        raise kernel.error(f"{what} must be a scalar, got shape {info.shape}", ShapeError)


class DFT(EagerKernel):
    """DFT (opset 20 form: inputs ``input``, ``dft_length``, ``axis``)."""

    def check(self, inputs):
        self.require_inputs(inputs, 1, 3)
        x = inputs[0]
        self.require_float(x, "input")
        if len(x.shape) < 2 or x.shape[-1] not in (1, 2):
            raise self.error(f"input must be [..., signal, 1 or 2], got {x.shape}", ShapeError)
        length = inputs[1] if len(inputs) > 1 else None
        axis = inputs[2] if len(inputs) > 2 else None
        _scalar_int(self, length, "dft_length")
        _scalar_int(self, axis, "axis")
        self._inverse = bool(self.attr("inverse", 0))
        self._onesided = bool(self.attr("onesided", 0))
        shape = None
        if (length is None or length.value is not None) and (axis is None or
                                                             axis.value is not None):
            shape = self._plan(x.shape, None if length is None else length.value,
                               None if axis is None else axis.value)[0]
        return [TensorInfo(shape, np.dtype(x.dtype))]

    def _plan(self, shape, length, axis):
        """(output shape, axis, transform length) after validating the scalar inputs."""
        rank = len(shape)
        a = -2 if axis is None else int(np.asarray(axis).reshape(-1)[0])
        if not (-rank <= a <= -2 or 0 <= a <= rank - 2):
            raise self.error(f"axis {a} is out of range for input rank {rank} (the last axis "
                             "holds the complex parts)", InputError)
        a %= rank
        if length is None:
            n = 2 * (shape[a] - 1) if self._inverse and self._onesided else shape[a]
        else:
            n = int(np.asarray(length).reshape(-1)[0])
        if n < 1:
            raise self.error(f"dft_length must be >= 1, got {n}", InputError)
        out = list(shape)
        if self._inverse and self._onesided:
            out[a], out[-1] = n, 1
        else:
            out[a] = n // 2 + 1 if self._onesided else n
            out[-1] = 2
        return tuple(out), a, n

    def compute(self, inputs):
        x = inputs[0]
        length = inputs[1] if len(inputs) > 1 else None
        axis = inputs[2] if len(inputs) > 2 else None
        _, a, n = self._plan(x.shape, length, axis)
        z = _as_complex(x)
        if self._inverse and self._onesided:
            # irfft reads n // 2 + 1 bins, zero-padding a shorter spectrum
            return [np.fft.irfft(z, n=n, axis=a)[..., None].astype(x.dtype)]
        y = np.fft.ifft(z, n=n, axis=a) if self._inverse else np.fft.fft(z, n=n, axis=a)
        if self._onesided:
            y = np.take(y, np.arange(n // 2 + 1), axis=a)
        return [_as_pairs(y, x.dtype)]


class STFT(EagerKernel):
    """STFT (opset 17): signal [B, L, 1|2] -> [B, frames, bins, 2]."""

    def check(self, inputs):
        self.require_inputs(inputs, 2, 4)
        x, step = inputs[0], inputs[1]
        window = inputs[2] if len(inputs) > 2 else None
        flen = inputs[3] if len(inputs) > 3 else None
        self.require_float(x, "signal")
        if len(x.shape) != 3 or x.shape[2] not in (1, 2):
            raise self.error(f"signal must be [batch, length, 1 or 2], got {x.shape}",
                             ShapeError)
        _scalar_int(self, step, "frame_step")
        _scalar_int(self, flen, "frame_length")
        if window is not None:
            self.require_float(window, "window")
            if len(window.shape) != 1:
                raise self.error(f"window must be 1-D, got {window.shape}", ShapeError)
        self._onesided = bool(self.attr("onesided", 1))
        shape = None
        if step.value is not None and (flen is None or flen.value is not None):
            shape = self._plan(x.shape, step.value, window.shape if window is not None else None,
                               None if flen is None else flen.value)[0]
        return [TensorInfo(shape, np.dtype(x.dtype))]

    def _plan(self, shape, step, window_shape, flen):
        step = int(np.asarray(step).reshape(-1)[0])
        if flen is not None:
            n = int(np.asarray(flen).reshape(-1)[0])
        elif window_shape is not None:
            n = int(window_shape[0])
        else:
            n = shape[1]
        if step < 1:
            raise self.error(f"frame_step must be >= 1, got {step}", InputError)
        if n < 1 or n > shape[1]:
            raise self.error(f"frame_length {n} must lie in [1, signal length {shape[1]}]",
                             InputError)
        if window_shape is not None and window_shape[0] != n:
            raise self.error(f"window has {window_shape[0]} values but frame_length is {n}",
                             ShapeError)
        frames = 1 + (shape[1] - n) // step
        bins = n // 2 + 1 if self._onesided else n
        return (shape[0], frames, bins, 2), step, n

    def compute(self, inputs):
        x, step = inputs[0], inputs[1]
        window = inputs[2] if len(inputs) > 2 else None
        flen = inputs[3] if len(inputs) > 3 else None
        shape, step, n = self._plan(x.shape, step, None if window is None else window.shape, flen)
        z = _as_complex(x)  # [B, L]
        starts = np.arange(shape[1]) * step
        frames = z[:, starts[:, None] + np.arange(n)[None, :]]  # [B, frames, n]
        if window is not None:
            frames = frames * window.astype(frames.real.dtype)
        y = np.fft.fft(frames, axis=-1)
        if self._onesided:
            y = y[..., : n // 2 + 1]
        return [_as_pairs(y, x.dtype)]


class MelWeightMatrix(EagerKernel):
    """MelWeightMatrix (opset 17): the ``[dft_length // 2 + 1, num_mel_bins]`` matrix of
    triangular filters that maps a one-sided magnitude spectrum to mel bands.

    ``num_mel_bins + 2`` band edges are spaced evenly on the mel scale
    (``2595 * log10(1 + hz / 700)``) from ``lower_edge_hertz`` on, ``(mel(upper) - mel(lower))
    / (num_mel_bins + 2)`` apart, and each edge falls on FFT bin ``floor((dft_length + 1) * hz /
    sample_rate)`` (the ONNX reference implementation's definition, which onnxruntime shares).
    Filter ``i`` rises linearly from 0 at edge ``i`` to 1 at edge ``i + 1`` and falls to 0 at
    edge ``i + 2``; a filter whose rising edges coincide is 1 at that bin. Edges past the last
    bin (an upper edge above the Nyquist frequency ``sample_rate / 2``) are an error, not a
    write out of range.
    """

    foldable = True  # a constant filter bank, computed once at prepare

    def check(self, inputs):
        self.require_inputs(inputs, 5, 5)
        for k, what in enumerate(("num_mel_bins", "dft_length", "sample_rate")):
            _scalar_int(self, inputs[k], what)
        for k, what in ((3, "lower_edge_hertz"), (4, "upper_edge_hertz")):
            self.require_float(inputs[k], what)
            if int(np.prod(inputs[k].shape)) != 1:
                raise self.error(f"{what} must be a scalar, got shape {inputs[k].shape}",
                                 ShapeError)
        code = int(self.attr("output_datatype", dtypes.FLOAT))
        if not dtypes.is_known(code) or dtypes.to_numpy(code).kind not in "fiu":
            raise self.error(f"output_datatype {code} is not a numeric element type",
                             DTypeError)
        self._dtype = dtypes.to_numpy(code)
        shape = None
        if inputs[0].value is not None and inputs[1].value is not None:
            n_mel, dft = (self._positive(inputs[k].value, what) for k, what in
                          ((0, "num_mel_bins"), (1, "dft_length")))
            shape = (dft // 2 + 1, n_mel)
        return [TensorInfo(shape, self._dtype)]

    def _positive(self, value, what: str) -> int:
        v = int(np.asarray(value).reshape(-1)[0])
        if v < 1:
            raise self.error(f"{what} must be at least 1, got {v}", InputError)
        return v

    def compute(self, inputs):
        n_mel = self._positive(inputs[0], "num_mel_bins")
        dft = self._positive(inputs[1], "dft_length")
        rate = self._positive(inputs[2], "sample_rate")
        lo, hi = (float(np.asarray(inputs[k]).reshape(-1)[0]) for k in (3, 4))
        if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo <= hi):
            raise self.error(f"the edge frequencies must satisfy 0 <= lower_edge_hertz <= "
                             f"upper_edge_hertz, got {lo} and {hi}", InputError)
        bins = dft // 2 + 1

        def mel(hz: float) -> float:
            return 2595 * np.log1p(hz / 700) / np.log(10)

        step = (mel(hi) - mel(lo)) / (n_mel + 2)
        hz = 700 * np.expm1((np.arange(n_mel + 2) * step + mel(lo)) / 2595 * np.log(10))
        edge = (((dft + 1) * hz) // rate).astype(np.int64)
        lower, center, higher = edge[:-2], edge[1:-1], edge[2:]
        if center.max() >= bins or higher.max() > bins:
            raise self.error(
                f"upper_edge_hertz {hi} reaches FFT bin {int(edge.max())}, past the {bins} "
                f"bins of dft_length {dft}: it must not exceed sample_rate / 2 = {rate / 2}",
                InputError)
        j = np.arange(bins)[:, None]
        rise = np.maximum(center - lower, 1)
        fall = np.maximum(higher - center, 1)
        out = np.where((j >= lower) & (j <= center), (j - lower) / rise, 0.0)
        out = np.where((j >= center) & (j < higher), (higher - j) / fall, out)
        out = np.where((j == center) & (center == lower), 1.0, out)
        return [out.astype(self._dtype)]


def register(reg: KernelRegistry) -> None:
    reg.add("DFT", DFT, since=20)  # opset 17-19 forms are rewritten at import
    reg.add("STFT", STFT, since=17)
    reg.add("MelWeightMatrix", MelWeightMatrix, since=17)
