"""Object-detection post-processing: NonMaxSuppression.

For every (batch, class) the boxes are visited by descending score (ties: lower box index
first, as the ONNX reference orders them); a box is kept unless its IoU with an already kept box
of the same class exceeds ``iou_threshold``. Boxes whose score is not above ``score_threshold``
(when given) are never candidates. The greedy pass runs in Numba; the output
``[num_selected, 3]`` (batch, class, box) is data-dependent, so its shape is known only after
invoke.

Numerical notes, matching the ONNX definition: a pair of boxes whose intersection or either area
is not positive never suppresses (so degenerate boxes are all kept), and corners may come in
either order (``[y1, x1, y2, x2]`` with y2 < y1 is the same box).
"""

from __future__ import annotations

import numpy as np

from edgert.errors import DTypeError, ShapeError
from edgert.runtime._jit import njit
from edgert.runtime.kernels.cpu.misc import EagerKernel
from edgert.runtime.registry import KernelRegistry, TensorInfo


@njit
def _corners(boxes, center, out):
    """[B, N, 4] boxes -> [B, N, 4] (y_min, x_min, y_max, x_max)."""
    for b in range(boxes.shape[0]):
        for i in range(boxes.shape[1]):
            if center:
                xc, yc, w, h = boxes[b, i, 0], boxes[b, i, 1], boxes[b, i, 2], boxes[b, i, 3]
                out[b, i, 0] = yc - h / 2.0
                out[b, i, 1] = xc - w / 2.0
                out[b, i, 2] = yc + h / 2.0
                out[b, i, 3] = xc + w / 2.0
            else:
                y1, x1, y2, x2 = boxes[b, i, 0], boxes[b, i, 1], boxes[b, i, 2], boxes[b, i, 3]
                out[b, i, 0] = min(y1, y2)
                out[b, i, 1] = min(x1, x2)
                out[b, i, 2] = max(y1, y2)
                out[b, i, 3] = max(x1, x2)


@njit
def _suppresses(a, b, iou_threshold):
    """Whether corner boxes ``a`` and ``b`` overlap by more than ``iou_threshold``."""
    ymin = max(a[0], b[0])
    xmin = max(a[1], b[1])
    ymax = min(a[2], b[2])
    xmax = min(a[3], b[3])
    if not (xmax > xmin and ymax > ymin):  # NaN corners: no overlap
        return False
    inter = (xmax - xmin) * (ymax - ymin)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    union = area_a + area_b - inter
    if not (inter > 0.0 and area_a > 0.0 and area_b > 0.0 and union > 0.0):
        return False
    return inter / union > iou_threshold


@njit
def _nms(corners, scores, order, counts, max_out, iou_threshold, out):
    """Greedy NMS; ``order[b, c, :counts[b, c]]`` are the candidates by descending score.

    Writes rows (batch, class, box) into ``out`` and returns how many.
    """
    n_sel = 0
    kept = np.empty(corners.shape[1], np.int64)
    for b in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            n_kept = 0
            for t in range(counts[b, c]):
                if n_kept >= max_out:
                    break
                i = order[b, c, t]
                keep = True
                for s in range(n_kept):
                    if _suppresses(corners[b, i], corners[b, kept[s]], iou_threshold):
                        keep = False
                        break
                if keep:
                    kept[n_kept] = i
                    n_kept += 1
                    out[n_sel, 0] = b
                    out[n_sel, 1] = c
                    out[n_sel, 2] = i
                    n_sel += 1
    return n_sel


class NonMaxSuppression(EagerKernel):
    """NonMaxSuppression (opset 10/11): boxes [B, N, 4], scores [B, C, N] -> [K, 3] int64."""

    def check(self, inputs):
        self.require_inputs(inputs, 2, 5)
        boxes, scores = inputs[0], inputs[1]
        self.require_float(boxes, "boxes")
        self.require_float(scores, "scores")
        if len(boxes.shape) != 3 or boxes.shape[2] != 4:
            raise self.error(f"boxes must be [batch, boxes, 4], got {boxes.shape}", ShapeError)
        if len(scores.shape) != 3 or scores.shape[0] != boxes.shape[0] or \
                scores.shape[2] != boxes.shape[1]:
            raise self.error(f"scores must be [{boxes.shape[0]}, classes, {boxes.shape[1]}], "
                             f"got {scores.shape}", ShapeError)
        for i, what, kinds in ((2, "max_output_boxes_per_class", "iu"),
                               (3, "iou_threshold", "f"), (4, "score_threshold", "f")):
            info = inputs[i] if len(inputs) > i else None
            if info is None:
                continue
            if np.dtype(info.dtype).kind not in kinds:
                raise self.error(f"{what} has dtype {info.dtype}", DTypeError)
            if len(info.shape) > 1 or (len(info.shape) == 1 and info.shape[0] > 1):
                raise self.error(f"{what} must be a scalar or a 1-element vector, got shape "
                                 f"{info.shape}", ShapeError)
        center = int(self.attr("center_point_box", 0))
        if center not in (0, 1):
            raise self.error(f"center_point_box must be 0 or 1, got {center}")
        self._center = bool(center)
        return [TensorInfo(None, np.dtype(np.int64))]

    @staticmethod
    def _scalar(inputs, i, default):
        v = inputs[i] if len(inputs) > i else None
        if v is None or v.size == 0:
            return default
        return v.reshape(-1)[0]

    def compute(self, inputs):
        boxes, scores = inputs[0], inputs[1]
        max_out = int(max(self._scalar(inputs, 2, 0), 0))
        iou = float(self._scalar(inputs, 3, 0.0))
        score_th = self._scalar(inputs, 4, None)
        nb, nc, n = scores.shape
        if max_out == 0 or n == 0 or nc == 0 or nb == 0:
            return [np.empty((0, 3), np.int64)]
        max_out = min(max_out, n)
        s = scores.astype(np.float64)
        # descending score, ties by ascending index: a stable sort of the negated scores
        order = np.argsort(-s, axis=2, kind="stable").astype(np.int64)
        if score_th is None:
            counts = np.full((nb, nc), n, np.int64)
        else:
            above = np.take_along_axis(s, order, axis=2) > float(score_th)
            counts = above.sum(axis=2).astype(np.int64)  # the above-threshold ones lead
        corners = np.empty((nb, n, 4), np.float64)
        _corners(np.ascontiguousarray(boxes, dtype=np.float64), self._center, corners)
        out = np.empty((nb * nc * max_out, 3), np.int64)
        k = _nms(corners, s, np.ascontiguousarray(order), counts, max_out, iou, out)
        return [out[:k].copy()]


def register(reg: KernelRegistry) -> None:
    reg.add("NonMaxSuppression", NonMaxSuppression, since=10)
