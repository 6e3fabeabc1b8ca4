"""Observers: running statistics of one tensor during calibration, turned into a float range.

Every observer keeps bounded memory whatever the number of samples: a min/max pair, or a fixed
number of histogram bins (:data:`BINS`) whose range grows by re-binning when new data falls
outside it. Activations are never stored.

* :class:`MinMaxObserver` — the global min and max (the default; TFLite's and onnxruntime's
  ``MinMax``).
* :class:`MovingAverageMinMaxObserver` — an exponential moving average of per-batch min/max
  (PyTorch's QAT observer); less sensitive to one outlier batch.
* :class:`PercentileObserver` — the ``percentile`` and ``100 - percentile`` points of the
  histogram (99.99 by default): clips rare outliers.
* :class:`EntropyObserver` — the clipping threshold that minimizes the KL divergence between the
  histogram of ``|x|`` and its int8-quantized version (TensorRT's entropy calibration).

Non-finite values (NaN, ±inf) and float32's extremes used as their stand-ins (``|x| >=``
:data:`SENTINEL`, e.g. an attention mask of ``torch.finfo(float32).min``) are left out of every
statistic and counted instead (:attr:`Observer.nonfinite`): an attention mask ``Where(mask, 0,
-inf)`` before a Softmax is legitimate, and int8 could not hold it anyway. The caller decides
what a tensor that held such values becomes (calibration keeps it float).
"""

from __future__ import annotations

import numpy as np

BINS = 2048
# Magnitudes from here up count as infinite: float32's max (3.4e38) is the usual "-inf" of a mask,
# and no int8 scale can keep ordinary values next to it (one step would be >= 4e27).
SENTINEL = 1e30


class Observer:
    """Base class: :meth:`update` with each batch, then :meth:`range` gives ``(lo, hi)``."""

    def __init__(self) -> None:
        self.lo = np.inf
        self.hi = -np.inf
        self.count = 0
        # values left out of the statistics: "nan", "+inf", "-inf" -> how many
        self.nonfinite: dict[str, int] = {}

    def update(self, x: np.ndarray, lo: float | None = None, hi: float | None = None) -> None:
        """Add a batch; ``lo``/``hi`` may pass its min and max when the caller has them.

        NaN, ±inf and values of magnitude >= :data:`SENTINEL` are not observed, only counted in
        :attr:`nonfinite`.
        """
        x = np.asarray(x)
        if x.size == 0:
            return
        if lo is None or hi is None:
            # min and max see any NaN (they propagate it) or Inf: one pass fewer than an
            # isfinite check over every activation
            lo, hi = float(x.min()), float(x.max())
        if not (-SENTINEL < lo and hi < SENTINEL):  # also False for NaN
            x = self._count_nonfinite(x)
            if x.size == 0:
                return
            lo, hi = float(x.min()), float(x.max())
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.count += 1
        self._update(x, lo, hi)

    def _count_nonfinite(self, x: np.ndarray) -> np.ndarray:
        """Count the NaN / ±inf (and sentinel) values of ``x``; return the others, flattened."""
        x = x.reshape(-1)
        nan = np.isnan(x)
        inf = np.isinf(x)
        with np.errstate(invalid="ignore"):
            big = ~nan & ~inf & (np.abs(x) >= SENTINEL)
            for key, mask in (("nan", nan), ("-inf", inf & (x < 0)), ("+inf", inf & (x > 0)),
                              (f"<=-{SENTINEL:g}", big & (x < 0)),
                              (f">={SENTINEL:g}", big & (x > 0))):
                n = int(np.count_nonzero(mask))
                if n:
                    self.nonfinite[key] = self.nonfinite.get(key, 0) + n
        return x[~(nan | inf | big)]

    def describe_nonfinite(self) -> str:
        """``"-inf x12, nan x1"`` (values that were left out), or ``""``."""
        return ", ".join(f"{k} x{n}" for k, n in sorted(self.nonfinite.items()))

    def _update(self, x: np.ndarray, lo: float, hi: float) -> None:
        pass

    @property
    def seen(self) -> bool:
        return self.count > 0

    def range(self) -> tuple[float, float]:
        return float(self.lo), float(self.hi)


class MinMaxObserver(Observer):
    """Global min and max."""


class MovingAverageMinMaxObserver(Observer):
    """``r = (1 - c) * r + c * batch_r`` for min and max, starting from the first batch."""

    def __init__(self, averaging_constant: float = 0.01) -> None:
        super().__init__()
        self.c = averaging_constant
        self.avg_lo = 0.0
        self.avg_hi = 0.0

    def _update(self, x, lo, hi):
        if self.count == 1:
            self.avg_lo, self.avg_hi = lo, hi
        else:
            self.avg_lo += self.c * (lo - self.avg_lo)
            self.avg_hi += self.c * (hi - self.avg_hi)

    def range(self):
        return float(self.avg_lo), float(self.avg_hi)


class _Histogram:
    """A histogram of ``BINS`` bins over ``[0, edge]`` or ``[lo, hi]`` that grows by re-binning.

    When a batch falls outside the current range, the range is widened (doubled until it fits, so
    re-binning happens O(log) times) and the old counts are moved to the new bins by their bin
    centres — a small smearing that is the price of bounded memory.
    """

    def __init__(self, bins: int = BINS) -> None:
        self.bins = bins
        self.counts = np.zeros(bins, np.float64)
        self.lo = 0.0
        self.hi = 0.0

    def add(self, x: np.ndarray) -> None:
        lo, hi = float(x.min()), float(x.max())
        if self.hi <= self.lo:  # first data
            if hi <= lo:
                hi = lo + 1e-8
            self.lo, self.hi = lo, hi
        elif lo < self.lo or hi > self.hi:
            width = self.hi - self.lo
            new_lo, new_hi = self.lo, self.hi
            while lo < new_lo or hi > new_hi:
                if lo < new_lo:
                    new_lo -= width
                if hi > new_hi:
                    new_hi += width
                width = new_hi - new_lo
            centres = self.lo + (np.arange(self.bins) + 0.5) * (self.hi - self.lo) / self.bins
            self.counts, _ = np.histogram(centres, self.bins, (new_lo, new_hi),
                                          weights=self.counts)
            self.lo, self.hi = new_lo, new_hi
        c, _ = np.histogram(x, self.bins, (self.lo, self.hi))
        self.counts += c

    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.bins + 1)


class PercentileObserver(Observer):
    """The ``(100 - p)``-th and ``p``-th percentiles of a running histogram."""

    def __init__(self, percentile: float = 99.99, bins: int = BINS) -> None:
        super().__init__()
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile {percentile} must be in (50, 100]")
        self.p = percentile
        self.hist = _Histogram(bins)

    def _update(self, x, lo, hi):
        self.hist.add(np.asarray(x, np.float32).reshape(-1))

    def range(self):
        counts = self.hist.counts
        total = counts.sum()
        if total == 0:
            return super().range()
        cdf = np.cumsum(counts) / total
        edges = self.hist.edges()
        tail = (100.0 - self.p) / 100.0
        i_lo = int(np.searchsorted(cdf, tail, side="left"))
        i_hi = int(np.searchsorted(cdf, 1.0 - tail, side="left"))
        lo = max(float(edges[i_lo]), self.lo)
        hi = min(float(edges[min(i_hi + 1, self.hist.bins)]), self.hi)
        return lo, hi


class EntropyObserver(Observer):
    """KL-divergence (entropy) calibration on the histogram of ``|x|``.

    For each candidate threshold (a bin edge), the histogram clipped there (outliers added to the
    last bin) is compared with the same histogram merged into the int8 levels and expanded back;
    the threshold with the smallest KL divergence wins. Non-negative tensors (after ReLU) use all
    256 levels, signed ones the 128 of one side.
    """

    def __init__(self, bins: int = BINS, stride: int = 16) -> None:
        super().__init__()
        self.hist = _Histogram(bins)
        self.stride = stride
        self.zeros = 0.0

    def _update(self, x, lo, hi):
        a = np.abs(np.asarray(x, np.float32).reshape(-1))
        self.zeros += float(np.count_nonzero(a == 0))
        if self.hist.hi <= self.hist.lo:
            self.hist.lo = 0.0
            self.hist.hi = max(float(a.max()), 1e-8)
        self.hist.add(a)

    def range(self):
        counts = self.hist.counts
        if counts.sum() == 0:
            return super().range()
        levels = 256 if self.lo >= 0 else 128
        # Exact zeros (half of a ReLU output) are left out: 0 is always exactly representable
        # (the zero point), so they add no error at any threshold, but their weight in the
        # first bin pulled the KL optimum to thresholds that clipped the real signal (digits
        # int8 accuracy 98.3 % with them, 99.7 % without).
        counts = counts.copy()
        counts[0] = max(counts[0] - self.zeros, 0.0)
        if counts.sum() == 0:
            return super().range()
        edges = self.hist.edges()
        threshold = edges[_kl_threshold_bin(counts, levels, self.stride)]
        return max(self.lo, -float(threshold)), min(self.hi, float(threshold))


def _kl_threshold_bin(hist: np.ndarray, levels: int, stride: int) -> int:
    """The bin count ``i`` (threshold = edge ``i``) that minimizes KL(P_i || Q_i)."""
    nbins = hist.shape[0]
    last_nonzero = int(np.nonzero(hist)[0][-1]) + 1
    if last_nonzero <= levels:
        return last_nonzero
    best_i, best_kl = nbins, np.inf
    for i in list(range(levels, nbins, stride)) + [nbins]:
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        # Merge the i bins into `levels` groups, then spread each group's mass evenly over its
        # non-empty bins (an empty bin of P must stay empty in Q, or KL is infinite).
        group = (np.arange(i) * levels) // i
        # Q is built from the clipped histogram *without* the outlier mass that P carries in its
        # last bin: that difference is what penalizes a too-small threshold.
        nonzero = (hist[:i] > 0).astype(np.float64)
        mass = np.bincount(group, weights=hist[:i], minlength=levels)
        nz_count = np.bincount(group, weights=nonzero, minlength=levels)
        q = np.where(nonzero > 0, mass[group] / np.maximum(nz_count[group], 1), 0.0)
        ps, qs = p.sum(), q.sum()
        if ps == 0 or qs == 0:
            continue
        p /= ps
        q /= qs
        mask = p > 0
        qm = np.maximum(q[mask], 1e-12)
        kl = float(np.sum(p[mask] * np.log(p[mask] / qm)))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i


METHODS = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "entropy": EntropyObserver,
}


def make_observer(method: str) -> Observer:
    """A new observer for ``method`` (one of :data:`METHODS`)."""
    try:
        return METHODS[method]()
    except KeyError:
        from edgert.errors import EdgeRTError

        raise EdgeRTError(
            f"unknown calibration method {method!r}; expected one of {', '.join(METHODS)}"
        ) from None
