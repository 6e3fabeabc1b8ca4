"""Recurrent layers: RNN, GRU and LSTM (forward, reverse, bidirectional; every activation).

The input projection of every time step and both directions is one GEMM
(``X·[W_fwd; W_rev]ᵀ``, through :func:`.blas.matmul`; when the two directions run on two
threads, each thread computes its direction's columns through sgemm at the start of the loop's
parallel region, so a layer enters one parallel region, not two); the recurrence then runs as
one compiled loop over time per cell type (:mod:`.recurrent_cells`), whose per-step ``H·Rᵀ``
calls sgemm from compiled code (``_native.openblas``) for two or more batch rows of a hidden
size >= 32 with R in L2 (see ``BLAS_MIN_HIDDEN``), and a compiled dot-product loop otherwise.
Gate orders follow ONNX: LSTM ``i o f c``, GRU ``z r h``. The biases are added inside the loop
(``Wb + Rb`` folded once, except GRU's ``Rbh`` under ``linear_before_reset=1``, which the reset
gate multiplies).

``sequence_lens``: a batch entry stops at its length — later steps output 0 in ``Y`` and leave
its state unchanged; the reverse direction walks each entry's own ``[0, len)`` backwards. An
entry of length 0 ends with its initial state in ``Y_h``/``Y_c`` (onnxruntime writes zeros
there; ONNX does not say). The lengths are checked to lie in ``[0, seq]`` before the loop
runs, and every shape at prepare, so the compiled loop never indexes outside its arrays
whatever the model says.
``clip`` bounds every gate pre-activation to ``[-clip, clip]``. ``layout=1`` puts the batch
first in X, Y, the initial and final states.

Activations (with ``activation_alpha`` / ``activation_beta`` consumed in order by the ones
that take parameters, ONNX defaults otherwise): Relu, Tanh, Sigmoid, Affine, LeakyRelu,
ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus. float32 sigmoid/tanh use
:mod:`.vmath`'s vectorized rows.

Threads: the ``(direction, batch range)`` parts run in parallel — a bidirectional layer's two
directions on 2 threads, a unidirectional layer's batch split — each part with its own state
and scratch rows. float32 and float64 are compiled; float16 runs in float32 and is rounded
once at the end (as :mod:`.float16` does for GEMMs).
"""

from __future__ import annotations

import numpy as np

from edgert.errors import DTypeError, ShapeError
from edgert.runtime.kernels.cpu._native import openblas
from edgert.runtime.kernels.cpu.blas import matmul
from edgert.runtime.kernels.cpu.misc import FLOATS
from edgert.runtime.kernels.cpu.recurrent_cells import ACT_CODES
from edgert.runtime.registry import Kernel, KernelRegistry, TensorInfo

# name -> (number of parameters, default alpha, default beta) (the ONNX operators' defaults)
_ACT_PARAMS = {
    "relu": (0, 0.0, 0.0),
    "tanh": (0, 0.0, 0.0),
    "sigmoid": (0, 0.0, 0.0),
    "affine": (2, 1.0, 0.0),
    "leakyrelu": (1, 0.01, 0.0),
    "thresholdedrelu": (1, 1.0, 0.0),
    "scaledtanh": (2, 1.0, 1.0),
    "hardsigmoid": (2, 0.2, 0.5),
    "elu": (1, 1.0, 0.0),
    "softsign": (0, 0.0, 0.0),
    "softplus": (0, 0.0, 0.0),
}

# H·Rᵀ goes to BLAS (sgemm/dgemm from the compiled loop) from this hidden size up, while one
# direction's R is at most BLAS_MAX_R_BYTES; otherwise the compiled dot loop runs. sgemm packs
# R on every call: with R in L2 that is cheap and its kernel beats the dot loop (8x128 @ 128x512:
# 10 µs vs 15 µs); a larger R is packed from L3 or memory each step (8x256 @ 256x1024: 87 µs vs
# 51 µs; 1x512 @ 512x2048: 384 µs vs 57 µs), and below 32 the call's set-up dominates
# (measured on a Zen 4 core).
BLAS_MIN_HIDDEN = 32
BLAS_MAX_R_BYTES = 512 << 10
# A layer with fewer multiply-adds than this in its recurrence stays on one thread.
PARALLEL_MIN_MACS = 1 << 16


class _Recurrent(Kernel):
    """Shared attribute handling, shape checks, weight packing and the call of the time loop."""

    gates = 1
    default_acts: tuple[str, ...] = ()
    n_states = 1  # LSTM: 2 (h and c)

    # ----- prepare ------------------------------------------------------------------------------
    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        self.require_inputs(inputs, 3, 8 if self.n_states == 2 else 6)
        inputs = list(inputs) + [None] * (8 - len(inputs))
        x, w, r, b, lens = inputs[:5]
        dt = np.dtype(x.dtype)
        if dt not in FLOATS:
            raise self.error(f"X has dtype {dt}; expected a float type", DTypeError)
        for info, what in ((w, "W"), (r, "R"), (b, "B"), (inputs[5], "initial_h"),
                           (inputs[6], "initial_c"), (inputs[7], "P")):
            if info is not None and np.dtype(info.dtype) != dt:
                raise self.error(f"{what} has dtype {np.dtype(info.dtype)}, X has {dt}",
                                 DTypeError)
        if len(x.shape) != 3 or len(w.shape) != 3 or len(r.shape) != 3:
            raise self.error("X, W and R must be 3-D", ShapeError)
        direction = self.attr("direction", "forward")
        if isinstance(direction, bytes):
            direction = direction.decode()
        if direction not in ("forward", "reverse", "bidirectional"):
            raise self.error(f"unknown direction {direction!r}")
        dirs = 2 if direction == "bidirectional" else 1
        self._dirs = dirs
        self._reverse = direction == "reverse"
        self._layout = int(self.attr("layout", 0))
        if self._layout not in (0, 1):
            raise self.error(f"layout must be 0 or 1, got {self._layout}")
        hidden = self.attr("hidden_size", None)
        hidden = int(hidden) if hidden is not None else int(r.shape[-1])
        if hidden < 1:
            raise self.error(f"hidden_size must be positive, got {hidden}")
        self._hidden = n = hidden
        g = self.gates * n
        if tuple(w.shape[:2]) != (dirs, g) or tuple(r.shape) != (dirs, g, n):
            raise self.error(f"W {tuple(w.shape)} / R {tuple(r.shape)} do not match {dirs} "
                             f"direction(s), {self.gates} gate(s) and hidden_size {n}",
                             ShapeError)
        in_size = x.shape[2]
        if w.shape[2] != in_size:
            raise self.error(f"W expects input size {w.shape[2]}, X has {in_size}", ShapeError)
        seq, batch = (x.shape[0], x.shape[1]) if self._layout == 0 else (x.shape[1], x.shape[0])
        self._seq, self._batch, self._in = int(seq), int(batch), int(in_size)
        s_shape = (dirs, batch, n) if self._layout == 0 else (batch, dirs, n)
        if b is not None and tuple(b.shape) != (dirs, 2 * g):
            raise self.error(f"B must have shape ({dirs}, {2 * g}), got {tuple(b.shape)}",
                             ShapeError)
        if lens is not None:
            if np.dtype(lens.dtype).kind not in "iu":
                raise self.error(f"sequence_lens must be integers, got {lens.dtype}", DTypeError)
            if tuple(lens.shape) != (batch,):
                raise self.error(f"sequence_lens must have shape ({batch},), got "
                                 f"{tuple(lens.shape)}", ShapeError)
        for k, what in ((5, "initial_h"), (6, "initial_c")):
            s = inputs[k]
            if s is not None and tuple(s.shape) != s_shape:
                raise self.error(f"{what} must have shape {s_shape}, got {tuple(s.shape)}",
                                 ShapeError)
        p = inputs[7]
        if p is not None and tuple(p.shape) != (dirs, 3 * n):
            raise self.error(f"P must have shape ({dirs}, {3 * n}), got {tuple(p.shape)}",
                             ShapeError)
        clip = self.attr("clip", None)
        self._use_clip = clip is not None
        self._input_forget = bool(int(self.attr("input_forget", 0)))
        self._lbr = bool(int(self.attr("linear_before_reset", 0)))
        # float16 is computed in float32
        self._dt = dt
        cd = np.dtype(np.float32) if dt == np.float16 else dt
        self._cd = cd
        self._clip = cd.type(float(clip) if clip is not None else 0.0)
        self._codes, self._alphas, self._betas = self._activations(cd)
        # constant weights packed once
        self._wcat = self._pack_w(w.value) if w.value is not None else None
        self._rr = self._pack_r(r.value) if r.value is not None else None
        self._bias = None if b is not None and b.value is None else self._pack_b(
            None if b is None else b.value)
        self._p = None if p is not None and p.value is None else self._pack_p(
            None if p is None else p.value)
        self._lens_const = None
        if lens is not None and lens.value is not None:
            self._lens_const = self._check_lens(lens.value)
        self._scratch = None
        y_shape = (seq, dirs, batch, n) if self._layout == 0 else (batch, seq, dirs, n)
        self.check_alloc((seq * batch, dirs * g), cd, "input projection")
        return [TensorInfo(y_shape, dt)] + [TensorInfo(s_shape, dt)] * self.n_states

    def _activations(self, cd):
        names = self.attr("activations", None)
        per_dir = len(self.default_acts)
        if not names:
            names = list(self.default_acts) * self._dirs
        names = [(n.decode() if isinstance(n, bytes) else str(n)).lower() for n in names]
        if len(names) != per_dir * self._dirs:
            raise self.error(f"expects {per_dir * self._dirs} activations, got {len(names)}")
        alphas = list(self.attr("activation_alpha", []) or [])
        betas = list(self.attr("activation_beta", []) or [])
        codes = np.zeros((self._dirs, per_dir), np.int64)
        al = np.zeros((self._dirs, per_dir), cd)
        be = np.zeros((self._dirs, per_dir), cd)
        for i, name in enumerate(names):
            if name not in ACT_CODES:
                raise self.error(f"activation {name!r} is not supported")
            n_params, a0, b0 = _ACT_PARAMS[name]
            a = alphas.pop(0) if n_params >= 1 and alphas else a0
            b = betas.pop(0) if n_params >= 2 and betas else b0
            d, k = divmod(i, per_dir)
            codes[d, k], al[d, k], be[d, k] = ACT_CODES[name], a, b
        return codes, al, be

    def _pack_w(self, w):
        """``[in, dirs*G]``: every direction's ``Wᵀ`` side by side (one GEMM for all)."""
        w = np.asarray(w, self._cd)
        return np.ascontiguousarray(np.concatenate([w[d].T for d in range(self._dirs)], axis=1))

    def _pack_r(self, r):
        """``(R, Rᵀ)`` contiguous: rows for the dot loop, the transpose for BLAS."""
        r = np.ascontiguousarray(np.asarray(r, self._cd))
        return r, np.ascontiguousarray(np.swapaxes(r, 1, 2))

    def _pack_b(self, b):
        """``(bias [dirs, G], rbh [dirs, hidden])``: ``Wb + Rb`` folded where the cell allows."""
        g, n = self.gates * self._hidden, self._hidden
        cd = self._cd
        rbh = np.zeros((self._dirs, n), cd)
        if b is None:
            return np.zeros((self._dirs, g), cd), rbh
        b = np.asarray(b, cd)
        wb, rb = b[:, :g], b[:, g:]
        if self.gates == 3 and self._lbr:  # Rbh is multiplied by the reset gate
            bias = wb.copy()
            bias[:, :2 * n] += rb[:, :2 * n]
            rbh[...] = rb[:, 2 * n:]
            return np.ascontiguousarray(bias), rbh
        return np.ascontiguousarray(wb + rb), rbh

    def _pack_p(self, p):
        if p is None:
            return np.zeros((self._dirs, 3 * self._hidden), self._cd), False
        return np.ascontiguousarray(np.asarray(p, self._cd)), True

    def _check_lens(self, lens) -> np.ndarray:
        lens = np.asarray(lens)
        if lens.shape != (self._batch,):
            raise self.error(f"sequence_lens must have shape ({self._batch},), got {lens.shape}",
                             ShapeError)
        if lens.size and (lens.min() < 0 or lens.max() > self._seq):
            raise self.error(f"sequence_lens must lie in [0, {self._seq}], got "
                             f"{lens.min()}..{lens.max()}", ShapeError)
        return np.array(lens, np.int64)  # an owned copy: one compiled signature

    def _buffers(self):
        """Scratch arrays of this shape (allocated once per prepare)."""
        if self._scratch is None:
            cd, n, dirs = self._cd, self._hidden, self._dirs
            seq, batch, g = self._seq, self._batch, self.gates * n
            self._scratch = {
                "xw": np.empty((seq * batch, dirs * g), cd),
                "hs": np.empty((dirs, batch, n), cd),
                "cs": np.empty((dirs, batch, n), cd),
                "gbuf": np.empty((dirs, batch, g), cd),
                "abuf": np.empty((dirs, batch, g), cd),
                "rh": np.empty((dirs, batch, n) if self.gates == 3 else (1, 1, 1), cd),
                "y": None,
                "dummy_y": np.empty((1, n), cd),
                "dummy_x": np.empty((1, 1), cd),
            }
        return self._scratch

    # ----- invoke -------------------------------------------------------------------------------
    def invoke(self, inputs, outputs):
        inputs = list(inputs) + [None] * (8 - len(inputs))
        outputs = list(outputs) + [None] * (1 + self.n_states - len(outputs))
        x, w, r, b, lens = inputs[:5]
        cd, n, dirs, layout = self._cd, self._hidden, self._dirs, self._layout
        seq, batch, g = self._seq, self._batch, self.gates * self._hidden
        wcat = self._wcat if self._wcat is not None else self._pack_w(w)
        rr, rt = self._rr if self._rr is not None else self._pack_r(r)
        bias, rbh = self._bias if self._bias is not None else self._pack_b(b)
        p, has_p = self._p if self._p is not None else self._pack_p(inputs[7])
        if lens is None:
            lens_arr = None
        elif self._lens_const is not None:
            lens_arr = self._lens_const
        else:
            lens_arr = self._check_lens(lens)
        buf = self._buffers()
        if lens_arr is None:
            if buf.get("full_lens") is None:
                buf["full_lens"] = np.full(batch, seq, np.int64)
            lens_arr = buf["full_lens"]
        threads = max(1, int(self.op.num_threads))
        routines = openblas.routines()
        parts = 1
        if threads > 1 and seq * batch * g * n >= PARALLEL_MIN_MACS:
            parts = max(1, min(batch, threads // dirs))
        serial = dirs * parts <= 1
        # input projection of every step, both directions: one GEMM, or, when the directions
        # run in parallel, each direction's columns computed by its own thread in the loop's
        # parallel region (fuse: one region per layer instead of two)
        xw = buf["xw"]
        x2 = buf["dummy_x"]
        fuse = (not serial and parts == 1 and routines is not None and self._in > 0
                and seq * batch > 0)
        if seq * batch:
            x2 = np.ascontiguousarray(x, cd).reshape(seq * batch, self._in)
            if fuse and not x2.flags.writeable:  # (a read-only array: another compiled type)
                x2 = x2.copy()
            if not fuse:
                matmul(x2, wcat, out=xw, threads=threads)
        hs, cs = buf["hs"], buf["cs"]
        for k, st in enumerate((hs, cs)[:self.n_states]):
            init = inputs[5 + k]
            if init is None:
                st.fill(0)
            else:
                np.copyto(st, init if layout == 0 else np.swapaxes(init, 0, 1), casting="unsafe")
        y_out = outputs[0]
        write_y = y_out is not None and y_out.size > 0
        y2 = buf["dummy_y"]
        direct = write_y and y_out.dtype == cd and y_out.flags.c_contiguous
        if direct:
            y2 = y_out.reshape(-1, n)
        elif write_y:
            if buf["y"] is None:
                buf["y"] = np.empty((seq * dirs * batch, n), cd)
            y2 = buf["y"]
        use_blas = (routines is not None and n >= BLAS_MIN_HIDDEN
                    and g * n * cd.itemsize <= BLAS_MAX_R_BYTES)
        fn = routines.address(cd) if use_blas else 0
        wide = routines.wide if use_blas else False
        if fuse:
            fn, wide = routines.address(cd), routines.wide
        if seq * batch:
            self._run(serial, xw, bias, rbh, rr, rt, p, has_p, hs, cs, buf, y2, write_y,
                      lens_arr, seq, fn, wide, use_blas, parts, x2, wcat, fuse)
        if write_y and not direct:
            np.copyto(y_out, y2.reshape(y_out.shape), casting="unsafe")
        for k, st in enumerate((hs, cs)[:self.n_states]):
            out = outputs[1 + k]
            if out is not None:
                np.copyto(out, st if layout == 0 else np.swapaxes(st, 0, 1), casting="unsafe")
        return None

    def _run(self, serial, xw, bias, rbh, rr, rt, p, has_p, hs, cs, buf, y2, write_y, lens,
             seq, fn, wide, use_blas, parts, x2, wcat, fuse):
        raise NotImplementedError


class RNN(_Recurrent):
    """``H = f(X·Wᵀ + H·Rᵀ + Wb + Rb)``."""

    gates = 1
    default_acts = ("tanh",)

    def _run(self, serial, xw, bias, rbh, rr, rt, p, has_p, hs, cs, buf, y2, write_y, lens,
             seq, fn, wide, use_blas, parts, x2, wcat, fuse):
        from edgert.runtime.kernels.cpu.recurrent_cells import rnn_run, rnn_run_serial

        (rnn_run_serial if serial else rnn_run)(
            xw, bias, rr, rt, hs, buf["gbuf"], buf["abuf"], y2, write_y, lens, self._codes,
            self._alphas, self._betas, self._layout, seq, self._reverse, self._clip,
            self._use_clip, fn, wide, use_blas, parts, x2, wcat, fuse)


class GRU(_Recurrent):
    """Update gate z, reset gate r, candidate h (``linear_before_reset`` picks the form)."""

    gates = 3
    default_acts = ("sigmoid", "tanh")

    def _run(self, serial, xw, bias, rbh, rr, rt, p, has_p, hs, cs, buf, y2, write_y, lens,
             seq, fn, wide, use_blas, parts, x2, wcat, fuse):
        from edgert.runtime.kernels.cpu.recurrent_cells import gru_run, gru_run_serial

        (gru_run_serial if serial else gru_run)(
            xw, bias, rbh, rr, rt, hs, buf["gbuf"], buf["abuf"], buf["rh"], y2, write_y, lens,
            self._codes, self._alphas, self._betas, self._layout, seq, self._reverse, self._clip,
            self._use_clip, self._lbr, fn, wide, use_blas, parts, x2, wcat, fuse)


class LSTM(_Recurrent):
    """Gates i, o, f, cell c; optional peepholes P and ``input_forget`` coupling."""

    gates = 4
    default_acts = ("sigmoid", "tanh", "tanh")
    n_states = 2

    def _run(self, serial, xw, bias, rbh, rr, rt, p, has_p, hs, cs, buf, y2, write_y, lens,
             seq, fn, wide, use_blas, parts, x2, wcat, fuse):
        from edgert.runtime.kernels.cpu.recurrent_cells import lstm_run, lstm_run_serial

        (lstm_run_serial if serial else lstm_run)(
            xw, bias, rr, rt, p, has_p, hs, cs, buf["gbuf"], buf["abuf"], y2, write_y, lens,
            self._codes, self._alphas, self._betas, self._layout, seq, self._reverse, self._clip,
            self._use_clip, self._input_forget, fn, wide, use_blas, parts, x2, wcat, fuse)


def register(reg: KernelRegistry) -> None:
    reg.add("RNN", RNN)
    reg.add("GRU", GRU)
    reg.add("LSTM", LSTM)
