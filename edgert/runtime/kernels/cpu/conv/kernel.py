"""The float Conv kernel: validate → infer the output → choose a path → plan it; ``invoke`` runs
the plan. What each path computes is in its own module (see :mod:`.choose` for the list)."""

from __future__ import annotations

import numpy as np

from edgert.runtime.kernels.cpu._native import openblas
from edgert.runtime.kernels.cpu._native.arrays import owned
from edgert.runtime.kernels.cpu.blas import identical_rows
from edgert.runtime.kernels.cpu.conv.choose import (
    DEFAULT_TUNING,
    ConvPath,
    ConvProblem,
    choose,
)
from edgert.runtime.kernels.cpu.conv.depthwise import (
    DepthwiseHwcPlan,
    DepthwisePaddedPlan,
    DepthwisePhasePlan,
    DepthwisePlan,
)
from edgert.runtime.kernels.cpu.conv.depthwise3 import Depthwise3x3Plan, Stem3x3S2Plan
from edgert.runtime.kernels.cpu.conv.direct import DirectPlan, ImplicitGemmPlan
from edgert.runtime.kernels.cpu.conv.im2col import GemmPlan, Im2colBlasRowsPlan, Im2colGemmPlan
from edgert.runtime.kernels.cpu.conv.plan import ConvPlan
from edgert.runtime.kernels.cpu.conv.pointwise import (
    PointwiseBlasPlan,
    PointwiseGemmPlan,
    PointwiseSmallPlan,
)
from edgert.runtime.kernels.cpu.epilogue import sum_epilogue
from edgert.runtime.ops.activation import Activation
from edgert.runtime.ops.conv import ConvSpec, conv_spec
from edgert.runtime.registry import Kernel, OpTraits, TensorInfo

PLANS: dict[ConvPath, type[ConvPlan]] = {cls.path: cls for cls in (
    PointwiseSmallPlan, PointwiseBlasPlan, PointwiseGemmPlan, Depthwise3x3Plan, DepthwiseHwcPlan,
    DepthwisePhasePlan, DepthwisePaddedPlan, DepthwisePlan, Stem3x3S2Plan, DirectPlan,
    ImplicitGemmPlan, Im2colBlasRowsPlan, Im2colGemmPlan)}


class ConvKernel(Kernel):
    """ONNX Conv, and ``edgert.Conv``: a fused activation (``activation`` attributes), an
    optional fourth input ``Z``, a residual of the output's shape added before the activation
    (``Y = act(conv(X, W) + B + Z)``), and ``channel_shuffle``. Inputs: X, W, optional B, Z.

    ``path`` names the algorithm chosen at prepare (:class:`~.choose.ConvPath`); the op
    context's ``path`` forces one and its ``tuning`` replaces the measured thresholds.
    """

    traits = OpTraits(int8="linear")

    path: ConvPath | None = None
    plan: ConvPlan | None = None
    scratch_nbytes = 0

    def prepare(self, inputs: list[TensorInfo | None]) -> list[TensorInfo]:
        spec = conv_spec(self, inputs)
        w, b = inputs[1], inputs[2] if len(inputs) > 2 else None
        problem = self._problem(spec, w)
        path = choose(problem, self.op.tuning or DEFAULT_TUNING, self.op.path)
        if isinstance(path, str):
            raise self.error(f"cannot run as forced: {path}")
        cls = PLANS[path]
        # A residual the path does not add itself: the path runs without the activation, then
        # one pass y = act(y + z). A shuffle it does not write itself: moved afterwards.
        self.sum_after = spec.has_sum and not cls.adds_residual
        native_shuffle = bool(spec.shuffle_g) and cls.shuffles and spec.group == spec.shuffle_g
        self.shuffle_after = bool(spec.shuffle_g) and not native_shuffle
        self.spec, self.path = spec, path
        self.plan = cls(problem, self.op.tuning or DEFAULT_TUNING,
                        Activation() if self.sum_after else spec.act, native_shuffle,
                        **({"classes": self._classes[1]} if issubclass(cls, GemmPlan) else {}))
        self.w_run = None if w.value is None else self.plan.pack(
            np.ascontiguousarray(w.value, dtype=spec.dtype), const=True)
        self.b_run = owned(b.value, spec.dtype) if b is not None and b.value is not None \
            else (None if spec.has_bias else np.zeros(0, spec.dtype))
        self.scratch_nbytes = self.plan.scratch_nbytes
        self.scratch = None
        self._fast = None
        self._pre_shuffle = None
        return [TensorInfo(spec.y_shape, spec.dtype)]

    def _problem(self, spec: ConvSpec, w: TensorInfo) -> ConvProblem:
        # Bit-identical constant filters (group 1) decide between the BLAS paths and the GEMM
        # ones that compute each class once; found once per weight (weights outlive re-plans).
        cached = getattr(self, "_classes", None)
        if cached is None or cached[0] is not w.value:
            classes = None
            if w.value is not None and spec.group == 1:
                classes = identical_rows(np.ascontiguousarray(
                    w.value, dtype=spec.dtype).reshape(spec.m_out, -1))
            self._classes = (w.value, classes)
        return ConvProblem(spec.n, spec.c_in, spec.m_out, spec.group, spec.win, spec.dtype,
                           w.value is not None, self._classes[1] is not None,
                           openblas.routines() is not None, max(1, self.op.num_threads))

    def bind_scratch(self, buf: np.ndarray) -> None:
        """Use ``buf`` (bytes, at least ``scratch_nbytes``) as the plan's scratch."""
        self._fast = None
        if self.scratch_nbytes:
            self.scratch = buf[: self.scratch_nbytes].view(self.spec.dtype).reshape(
                self.plan.scratch_shape)

    def invoke(self, inputs, outputs):
        out = outputs[0]
        y = out
        if self.shuffle_after:
            if self._pre_shuffle is None or self._pre_shuffle.shape != out.shape:
                self._pre_shuffle = np.empty(out.shape, out.dtype)
            y = self._pre_shuffle
        z = inputs[3] if self.spec.has_sum else None
        fast = self._fast
        if fast is not None and inputs[0] is fast[0] and y is fast[1] and z is fast[2]:
            fast[3](*fast[4])  # the same arrays as last time: repeat the one compiled call
        elif y.size:
            self._run(inputs, y, z)
        if self.sum_after:
            act = self.spec.act
            sum_epilogue(y.reshape(y.shape[0] * y.shape[1], -1),
                         np.ascontiguousarray(z).reshape(y.shape[0] * y.shape[1], -1),
                         act, act.params(self.spec.dtype))
        if self.shuffle_after:
            # out[n, j * g + i] = y[n, i * M/g + j] (edgert.ChannelShuffle's move)
            n, g, plane = y.shape[0], self.spec.shuffle_g, int(np.prod(y.shape[2:]))
            np.copyto(out.reshape(n, -1, g, plane),
                      y.reshape(n, g, -1, plane).transpose(0, 2, 1, 3))

    def _run(self, inputs, y, z) -> None:
        """Run the plan; remember a single compiled call for the next invoke when it only
        depends on arrays the interpreter hands over unchanged (the views and the argument
        unpacking cost ~3 µs of Python per conv, a third of a small layer's time)."""
        x = np.ascontiguousarray(inputs[0])
        w = self.w_run
        if w is None:
            w = self.plan.pack(np.ascontiguousarray(inputs[1]), const=False)
        bias = self.b_run if self.b_run is not None else np.ascontiguousarray(inputs[2])
        if self.scratch is None and self.scratch_nbytes:
            self.scratch = np.empty(self.plan.scratch_shape, self.spec.dtype)
        call = self.plan.run(x, w, bias, y, z, self.scratch)
        if (call is not None and x is inputs[0] and self.w_run is not None
                and self.b_run is not None):
            self._fast = (inputs[0], y, z) + call
