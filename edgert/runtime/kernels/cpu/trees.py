"""Tree ensembles of ai.onnx.ml: TreeEnsembleClassifier, TreeEnsembleRegressor (ML opsets 1-5)
and TreeEnsemble (ML opset 5).

Every form is flattened at prepare into one node table shared by all trees (:class:`Forest`),
packed into one record per node (:func:`node_dtype`): a feature index, a threshold in the
input's precision, a mode byte (comparison, leaf, "missing value goes true"), the true and false
child, and for a leaf the range of its (target, weight) pairs. A compiled kernel walks each tree
for a block of rows at a time (the tree stays in cache), 16 rows in lockstep (a few rows: 16
trees in lockstep), and aggregates leaf weights into scores in the input's precision, tree by
tree in model order, as onnxruntime sums them. It splits a batch's rows over the threads, and a
single row's trees (partial scores per tree block, merged afterwards). A classifier's rows with
three or more classes are finished in one compiled pass (base values, label, post-transform);
the two-class rules and the regressors' aggregation run vectorized in NumPy. Large node tables
are written to the ``.edgert`` file as typed arrays (:meth:`_TreeKernel.pack_attributes`).

A node goes to its true child when its comparison holds (``x <= t`` for BRANCH_LEQ, ``x < t``,
``x >= t``, ``x > t``, ``x == t``, ``x != t``, ``x`` in the node's set for BRANCH_MEMBER) or
when ``x`` is NaN and the node's missing value tracks true; otherwise to its false child (so a
NaN goes false, except at BRANCH_NEQ where ``NaN != t`` holds). Thresholds are compared in the
input's precision (float32 for float32 input, as onnxruntime does; float64 for double and
integer inputs).

Validation happens before anything runs: attribute lengths agree, every child and leaf
reference is in range, every tree reached from its root is acyclic (so a walk always ends),
feature indices fit the input's feature count and target / class ids fit the outputs.

The aggregation and the classifier's handling of two classes follow onnxruntime, which users
compare against, where the ONNX spec leaves room: base values are added only when there is one
per target or class; a target or class no reached leaf scored reads 0; a binary classifier whose
trees score a single class derives the second score from the first (``1 - p``, or ``-s`` / a
logistic pair with mixed-sign weights) and picks its label by ``p > 0.5`` (all weights
positive) or ``s > 0``. Where the spec is explicit it wins: a single-target regressor applies
its post_transform (onnxruntime applies only PROBIT there), and TreeEnsemble numbers
post_transform as its spec does (1 SOFTMAX, 2 LOGISTIC; onnxruntime 1.32 swaps them).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edgert.errors import DTypeError, InputError, KernelError, ShapeError
from edgert.runtime import _jit
from edgert.runtime._jit import njit, prange
from edgert.runtime.kernels.cpu.ml_common import (
    apply_post_transform,
    check_post_transform,
    class_labels,
    logistic,
    probit,
)
from edgert.runtime.registry import Kernel, KernelRegistry, TensorInfo

# Mode byte: low 3 bits the comparison, MISSING_TRUE the NaN rule.
LEQ, LT, GTE, GT, EQ, NEQ, MEMBER, LEAF = range(8)
MISSING_TRUE = 8
_V3_MODES = {"BRANCH_LEQ": LEQ, "BRANCH_LT": LT, "BRANCH_GTE": GTE, "BRANCH_GT": GT,
             "BRANCH_EQ": EQ, "BRANCH_NEQ": NEQ, "LEAF": LEAF}
# Aggregations (TreeEnsemble's numbering).
AVERAGE, SUM, MIN, MAX = range(4)
_V3_AGGREGATES = {"AVERAGE": AVERAGE, "SUM": SUM, "MIN": MIN, "MAX": MAX}
_V5_TRANSFORMS = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")
_FLOAT_INPUTS = (np.dtype(np.float32), np.dtype(np.float64))
_INPUTS = (*_FLOAT_INPUTS, np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.float16))


class Forest(NamedTuple):
    """The flattened trees (see the module docstring). Children and roots index ``feature``."""

    feature: np.ndarray  # int32 [nodes]
    threshold: np.ndarray  # float64 [nodes] (cast to the input's precision at prepare)
    mode: np.ndarray  # uint8 [nodes]
    true_child: np.ndarray  # int32 [nodes]
    false_child: np.ndarray  # int32 [nodes]
    set_lo: np.ndarray  # int32 [nodes]: BRANCH_MEMBER's values are set_values[set_lo:set_hi]
    set_hi: np.ndarray
    set_values: np.ndarray  # float64
    leaf_lo: np.ndarray  # int32 [nodes]: a leaf's pairs are [leaf_lo, leaf_hi)
    leaf_hi: np.ndarray
    leaf_target: np.ndarray  # int32 [pairs]
    leaf_weight: np.ndarray  # float64 [pairs]
    roots: np.ndarray  # int32 [trees]

    @property
    def leq_only(self) -> int:
        """1: every branch is a plain BRANCH_LEQ (scikit-learn's trees); 2: every branch is
        BRANCH_LEQ, some with the NaN rule (LightGBM's, XGBoost's); 0: other modes. O(nodes):
        computed at prepare."""
        branch = (self.mode & 7) != LEAF
        modes = self.mode[branch]
        if (modes == LEQ).all():
            return 1
        return 2 if ((modes & 7) == LEQ).all() else 0

    @property
    def max_feature(self) -> int:
        branch = (self.mode & 7) != LEAF
        return int(self.feature[branch].max()) if branch.any() else -1


# ----- the compiled walk --------------------------------------------------------------------------
def node_dtype(threshold: np.dtype) -> np.dtype:
    """One node as the walk reads it: everything a step needs in one record (one cache line
    access instead of five). For a leaf, ``true``/``false`` hold its [lo, hi) range of (target,
    weight) pairs."""
    return np.dtype([("threshold", threshold), ("feature", np.int32), ("true", np.int32),
                     ("false", np.int32), ("mode", np.uint8)], align=True)


# Rows walked together through one tree: the tree's nodes stay in cache across them.
ROW_BLOCK = 64
# A walk is a chain of dependent loads (node -> child -> ...): one walk at a time waits on
# memory at every step, so LANES independent walks run in lockstep and overlap their loads:
# LANES rows through the same tree for a batch, LANES trees for a single row. One thread,
# measured: 1000 rows x 500 trees of depth 10, 52 -> 26.5 ms; 1000 rows x 100 trees of depth
# ~25, 27.6 -> 17.3 ms; 1 row x 500 trees, 37 -> 25 µs (16 lanes; 8: 27, 4: 27.5, 32: 25).
LANES = 16
# Batches below this many rows walk their trees in lockstep (_walk_lanes), larger ones their
# rows (_walk).
LANE_ROWS = 16


@njit(inline="always")
def _child(nodes, node, v, set_lo, set_hi, set_values, leq_only):
    """The node a row with feature value ``v`` goes to from branch ``node``; ``leq_only``
    (:attr:`Forest.leq_only`) 1 or 2: every branch is BRANCH_LEQ, a loop-invariant test that
    spares the mode dispatch (1 row, 500 trees: -10 %)."""
    nd = nodes[node]
    th = nd.threshold
    if leq_only == 1:
        return nd.true if v <= th else nd.false
    if leq_only == 2:  # (bitwise, not short-circuit: a select instead of a branch)
        return nd.true if (v <= th) | (((nd.mode & 8) != 0) & (v != v)) else nd.false
    m = nd.mode
    c = m & 7
    if c == 0:
        go = v <= th
    elif c == 1:
        go = v < th
    elif c == 2:
        go = v >= th
    elif c == 3:
        go = v > th
    elif c == 4:
        go = v == th
    elif c == 5:
        go = v != th
    else:
        go = False
        for k in range(set_lo[node], set_hi[node]):
            if v == set_values[k]:
                go = True
                break
    if not go and (m & 8) != 0 and v != v:
        go = True
    return nd.true if go else nd.false


@njit(inline="always")
def _add_leaf(nodes, leaf, leaf_target, leaf_weight, agg, scores, has, tb, r):
    lf = nodes[leaf]
    for k in range(lf.true, lf.false):
        j = leaf_target[k]
        w = leaf_weight[k]
        if agg <= 1:
            scores[tb, r, j] += w
        elif agg == 2:
            if has[tb, r, j] == 0 or w < scores[tb, r, j]:
                scores[tb, r, j] = w
        elif has[tb, r, j] == 0 or w > scores[tb, r, j]:
            scores[tb, r, j] = w
        has[tb, r, j] = 1


@njit(inline="always")
def _task_block(task, tree_blocks, row_blocks, trees, rows):
    """Task ``task``'s tree block index and its [t0, t1) trees and [r0, r1) rows."""
    tb = task // row_blocks
    rb = task - tb * row_blocks
    return (tb, tb * trees // tree_blocks, (tb + 1) * trees // tree_blocks,
            rb * rows // row_blocks, (rb + 1) * rows // row_blocks)


@njit(parallel=True)
def _walk(x, nodes, set_lo, set_hi, set_values, leaf_target, leaf_weight, roots, agg,
          tree_blocks, row_blocks, scores, has, leq_only):
    """scores/has [tree_blocks, N, targets]: each task takes one block of trees and one block
    of rows and walks each tree for a ROW_BLOCK of rows at a time (tree by tree, so each row
    sums its trees in model order), LANES rows in lockstep, aggregating into its own slice."""
    for task in prange(tree_blocks * row_blocks):
        lane = np.empty(LANES, np.int32)
        tb, t0, t1, r_lo, r_end = _task_block(task, tree_blocks, row_blocks, roots.shape[0],
                                              x.shape[0])
        for r0 in range(r_lo, r_end, ROW_BLOCK):
            r1 = min(r0 + ROW_BLOCK, r_end)
            for t in range(t0, t1):
                root = roots[t]
                for rg in range(r0, r1, LANES):
                    width = min(LANES, r1 - rg)
                    for g in range(width):
                        lane[g] = root
                    busy = True
                    while busy:
                        busy = False
                        for g in range(width):
                            node = lane[g]
                            if (nodes[node].mode & 7) != 7:
                                busy = True
                                lane[g] = _child(nodes, node, x[rg + g, nodes[node].feature],
                                                 set_lo, set_hi, set_values, leq_only)
                    for g in range(width):
                        _add_leaf(nodes, lane[g], leaf_target, leaf_weight, agg, scores, has,
                                  tb, rg + g)


@njit(parallel=True)
def _walk_lanes(x, nodes, set_lo, set_hi, set_values, leaf_target, leaf_weight, roots, agg,
                tree_blocks, row_blocks, scores, has, leq_only):
    """As :func:`_walk`, for a few rows: LANES trees in lockstep per row."""
    for task in prange(tree_blocks * row_blocks):
        lane = np.empty(LANES, np.int32)
        tb, t0, t1, r0, r1 = _task_block(task, tree_blocks, row_blocks, roots.shape[0],
                                         x.shape[0])
        for r in range(r0, r1):
            for tg in range(t0, t1, LANES):
                width = min(LANES, t1 - tg)
                for g in range(width):
                    lane[g] = roots[tg + g]
                busy = True
                while busy:
                    busy = False
                    for g in range(width):
                        node = lane[g]
                        if (nodes[node].mode & 7) != 7:
                            busy = True
                            lane[g] = _child(nodes, node, x[r, nodes[node].feature], set_lo,
                                             set_hi, set_values, leq_only)
                for g in range(width):  # in tree order: the sums match a sequential walk
                    _add_leaf(nodes, lane[g], leaf_target, leaf_weight, agg, scores, has, tb, r)


_walk_serial = _jit.serial_twin(_walk)
_walk_lanes_serial = _jit.serial_twin(_walk_lanes)

# post_transform codes of _finish_classes
_POST_CODES = {"NONE": 0, "LOGISTIC": 1, "SOFTMAX": 2, "SOFTMAX_ZERO": 3, "PROBIT": 4}


@njit
def _finish_classes(scores, has, base, post, index, z):
    """A classifier's rows with three or more classes, in one pass (the NumPy form took ~10 µs
    of a 40 µs single-row forest): base values, the label (the first highest score among the
    classes that have one), then the scores with unscored classes at 0, post-transformed as
    :mod:`ml_common` does (same formulas; PROBIT in float32)."""
    n, c = scores.shape
    k = min(base.shape[0], c)
    row = np.empty(c, np.float64)
    for r in range(n):
        best = -1
        top = 0.0
        for j in range(c):
            v = np.float64(scores[r, j])
            hit = has[r, j] != 0
            if j < k:
                v += base[j]
                hit = True
            row[j] = v if hit else 0.0
            if hit and (best < 0 or v > top):
                best, top = j, v
        index[r] = max(best, 0)
        if post == 1:
            for j in range(c):
                e = np.exp(-abs(row[j]))
                p = 1.0 / (1.0 + e)
                row[j] = 1.0 - p if row[j] < 0 else p
        elif post == 2 or post == 3:
            m = row[0]
            for j in range(1, c):
                m = max(m, row[j])
            total = 0.0
            for j in range(c):
                if post == 3 and abs(row[j]) <= 1e-7:
                    row[j] = row[j] * np.exp(-m)
                else:
                    row[j] = np.exp(row[j] - m)
                total += row[j]
            for j in range(c):
                row[j] = 0.5 if post == 3 and total == 0 else row[j] / total
        elif post == 4:
            for j in range(c):
                xv = np.float32(2.0) * np.float32(row[j]) - np.float32(1.0)
                w = (np.float32(1.0) - xv) * (np.float32(1.0) + xv)
                lg = np.log(w)
                a = np.float32(2.0 / (3.14159 * 0.147)) + np.float32(0.5) * lg
                b = lg / np.float32(0.147)
                e = np.sqrt(-a + np.sqrt(a * a - b))
                row[j] = np.float32(1.41421356) * (-e if xv < 0 else e)
        for j in range(c):
            z[r, j] = row[j]


def pack_nodes(forest: Forest, threshold: np.dtype) -> np.ndarray:
    """The forest's node records (:func:`node_dtype`) with thresholds in ``threshold``."""
    nodes = np.zeros(len(forest.mode), node_dtype(np.dtype(threshold)))
    nodes["threshold"] = forest.threshold
    nodes["feature"] = forest.feature
    leaf = (forest.mode & 7) == LEAF
    nodes["true"] = np.where(leaf, forest.leaf_lo, forest.true_child)
    nodes["false"] = np.where(leaf, forest.leaf_hi, forest.false_child)
    nodes["mode"] = forest.mode
    return nodes


def run_forest(forest: Forest, nodes: np.ndarray, weight: np.ndarray, x: np.ndarray,
               targets: int, agg: int, threads: int,
               leq_only: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, targets] in ``weight``'s dtype, has uint8 [N, targets]) of ``x`` [N, F];
    ``nodes`` (:func:`pack_nodes`) and ``weight`` hold the thresholds and leaf weights in the
    precision to compare and sum in; ``leq_only`` whether every branch is BRANCH_LEQ
    (:attr:`Forest.leq_only`)."""
    n = x.shape[0]
    trees = len(forest.roots)
    few = n < LANE_ROWS
    if threads <= 1 or n * trees < 256:
        tree_blocks, row_blocks = 1, 1
        fn = _walk_lanes_serial if few else _walk_serial
    elif n >= 2 * ROW_BLOCK * threads:
        tree_blocks, row_blocks, fn = 1, min(n // ROW_BLOCK, 4 * threads), _walk
    else:  # a few rows: split the trees
        tree_blocks, row_blocks = min(trees, threads), 1
        fn = _walk_lanes if few else _walk
    scores = np.zeros((tree_blocks, n, targets), weight.dtype)
    has = np.zeros((tree_blocks, n, targets), np.uint8)
    f = forest
    fn(x, nodes, f.set_lo, f.set_hi, f.set_values, f.leaf_target, weight, f.roots, agg,
       tree_blocks, row_blocks, scores, has, leq_only)
    if tree_blocks == 1:
        return scores[0], has[0]
    if agg <= SUM:  # (a summed block that no leaf reached holds 0)
        return scores.sum(axis=0, dtype=weight.dtype), has.max(axis=0)
    hit = has.astype(bool)
    if agg <= SUM:
        merged = scores.sum(axis=0)
    elif agg == MIN:
        merged = np.where(hit, scores, np.inf).min(axis=0)
    else:
        merged = np.where(hit, scores, -np.inf).max(axis=0)
    any_hit = hit.any(axis=0)
    return np.where(any_hit, merged, 0).astype(weight.dtype), any_hit.astype(np.uint8)


# ----- building the node table --------------------------------------------------------------------
def _check_acyclic(where: str, true_child: np.ndarray, false_child: np.ndarray,
                   is_leaf: np.ndarray, roots: np.ndarray) -> None:
    """Every walk from a root ends at a leaf: no node is reached twice on one path."""
    n = len(is_leaf)
    branch = ~is_leaf
    indeg = np.bincount(true_child[branch], minlength=n) + np.bincount(false_child[branch],
                                                                        minlength=n)
    indeg_roots = indeg[roots]
    if indeg.max(initial=0) <= 1 and not indeg_roots.any():
        return  # every node has at most one parent and no root has one: disjoint trees
    state = np.zeros(n, np.uint8)  # 0 unseen, 1 on the current path, 2 done
    for root in roots.tolist():
        if state[root] == 2:
            continue
        stack = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            if leaving:
                state[node] = 2
                continue
            if state[node] == 1:
                raise KernelError(f"{where}: the trees have a cycle through node {node}")
            if state[node] == 2:
                continue
            state[node] = 1
            stack.append((node, True))
            if branch[node]:
                for child in (int(true_child[node]), int(false_child[node])):
                    if state[child] == 1:
                        raise KernelError(f"{where}: the trees have a cycle through node {node}")
                    if state[child] == 0:
                        stack.append((child, False))


def _attr_array(kernel: Kernel, names: tuple[str, ...], dtype, required: bool = False):
    """The first of ``names`` that is set (a list or a tensor attribute), as a 1-D array."""
    for name in names:
        value = kernel.attr(name)
        if value is not None:
            arr = np.asarray(value)
            if arr.dtype == object or arr.ndim > 1:
                raise kernel.error(f"attribute {name} must be a list of numbers")
            return np.asarray(arr, dtype=dtype).reshape(-1)
    if required:
        raise kernel.error(f"attribute {names[0]} is required")
    return None


def _same_lengths(kernel: Kernel, first: str, n: int, missing, lists: dict) -> None:
    """Every ``nodes_*`` list (and the optional, possibly empty, missing-value list) holds
    ``n`` entries, as ``first`` does; else a KernelError naming the ones that do not."""
    lengths = {name: len(v) for name, v in lists.items()}
    if missing is not None and len(missing):
        lengths["nodes_missing_value_tracks_true"] = len(missing)
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise kernel.error(f"{first} has {n} entries but " +
                           ", ".join(f"{k} has {v}" for k, v in bad.items()))


def forest_v3(kernel: Kernel, prefix: str) -> tuple[Forest, int]:
    """The node table of TreeEnsembleClassifier (``prefix`` "class") or TreeEnsembleRegressor
    ("target"); also the largest class / target id."""
    where = kernel.where()
    tree_ids = _attr_array(kernel, ("nodes_treeids",), np.int64, True)
    node_ids = _attr_array(kernel, ("nodes_nodeids",), np.int64, True)
    features = _attr_array(kernel, ("nodes_featureids",), np.int64, True)
    values = _attr_array(kernel, ("nodes_values", "nodes_values_as_tensor"), np.float64, True)
    true_ids = _attr_array(kernel, ("nodes_truenodeids",), np.int64, True)
    false_ids = _attr_array(kernel, ("nodes_falsenodeids",), np.int64, True)
    modes_attr = kernel.attr("nodes_modes")
    packed = isinstance(modes_attr, np.ndarray) and modes_attr.dtype == np.uint8
    if not packed and not isinstance(modes_attr, (list, tuple)):
        raise kernel.error("attribute nodes_modes (a list of strings) is required")
    missing = _attr_array(kernel, ("nodes_missing_value_tracks_true",), np.int64)
    n = len(tree_ids)
    if n == 0:
        raise kernel.error("the ensemble has no nodes")
    _same_lengths(kernel, "nodes_treeids", n, missing, {
        "nodes_nodeids": node_ids, "nodes_featureids": features, "nodes_values": values,
        "nodes_truenodeids": true_ids, "nodes_falsenodeids": false_ids,
        "nodes_modes": modes_attr})
    try:
        if packed:  # (pack_attributes' codes, read back from a .edgert file)
            mode = modes_attr.reshape(-1).copy()
            if ((mode > LEAF) | (mode == MEMBER)).any():
                raise KeyError
        else:
            mode = np.array([_V3_MODES[m] for m in modes_attr], np.uint8)
    except (KeyError, TypeError):
        if packed:
            raise kernel.error("nodes_modes holds codes outside 0..5 and 7") from None
        unknown = next(m for m in modes_attr if m not in _V3_MODES)
        raise kernel.error(f"unknown node mode {unknown!r} (expected one of "
                           f"{', '.join(_V3_MODES)})") from None
    if missing is not None and len(missing):
        mode |= np.where(missing != 0, MISSING_TRUE, 0).astype(np.uint8)
    is_leaf = mode == LEAF
    if (tree_ids < 0).any() or (node_ids < 0).any():
        raise kernel.error("tree and node ids must be >= 0")
    if (features[~is_leaf] < 0).any():
        raise kernel.error("a branch node has a negative feature id")

    # (tree, node) -> position, vectorized
    span = int(max(node_ids.max(), true_ids.max(initial=0), false_ids.max(initial=0))) + 1
    keys = tree_ids * span + node_ids
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    if (np.diff(sorted_keys) == 0).any():
        dup = sorted_keys[np.flatnonzero(np.diff(sorted_keys) == 0)[0]]
        raise kernel.error(f"node {dup % span} of tree {dup // span} is defined twice")

    def locate(trees: np.ndarray, nodes: np.ndarray, what: str) -> np.ndarray:
        want = trees * span + nodes
        pos = np.searchsorted(sorted_keys, want)
        ok = (nodes >= 0) & (nodes < span) & (pos < n)
        ok[ok] = sorted_keys[pos[ok]] == want[ok]
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise kernel.error(f"{what} {i} refers to node {int(nodes[i])} of tree "
                               f"{int(trees[i])}, which does not exist")
        return order[pos].astype(np.int32)

    branch = ~is_leaf
    true_child = np.zeros(n, np.int32)
    false_child = np.zeros(n, np.int32)
    true_child[branch] = locate(tree_ids[branch], true_ids[branch], "the true branch of node")
    false_child[branch] = locate(tree_ids[branch], false_ids[branch], "the false branch of node")

    # leaf weights
    w_tree = _attr_array(kernel, (f"{prefix}_treeids",), np.int64)
    w_node = _attr_array(kernel, (f"{prefix}_nodeids",), np.int64)
    w_id = _attr_array(kernel, (f"{prefix}_ids",), np.int64)
    w_val = _attr_array(kernel, (f"{prefix}_weights", f"{prefix}_weights_as_tensor"), np.float64)
    w_tree, w_node, w_id, w_val = (np.zeros(0, t) if a is None else a for a, t in
                                   ((w_tree, np.int64), (w_node, np.int64), (w_id, np.int64),
                                    (w_val, np.float64)))
    m = len(w_tree)
    if not len(w_node) == len(w_id) == len(w_val) == m:
        raise kernel.error(f"{prefix}_treeids, {prefix}_nodeids, {prefix}_ids and "
                           f"{prefix}_weights must have the same length, got {m}, {len(w_node)}, "
                           f"{len(w_id)}, {len(w_val)}")
    if (w_id < 0).any():
        raise kernel.error(f"{prefix}_ids must be >= 0")
    at = locate(w_tree, w_node, f"{prefix} weight") if m else np.zeros(0, np.int32)
    if m and not is_leaf[at].all():
        i = int(np.flatnonzero(~is_leaf[at])[0])
        raise kernel.error(f"{prefix} weight {i} is attached to node {int(w_node[i])} of tree "
                           f"{int(w_tree[i])}, which is not a leaf")
    by_leaf = np.argsort(at, kind="stable")
    counts = np.bincount(at, minlength=n)
    leaf_hi = np.cumsum(counts).astype(np.int32)
    leaf_lo = (leaf_hi - counts).astype(np.int32)

    # roots: the nodes no branch points to, in the order of their trees' first appearance
    referenced = np.zeros(n, bool)
    referenced[true_child[branch]] = True
    referenced[false_child[branch]] = True
    roots = np.flatnonzero(~referenced).astype(np.int32)
    if len(roots) == 0:
        raise kernel.error("the trees have no root (every node is some node's child)")
    _check_acyclic(where, true_child, false_child, is_leaf, roots)
    forest = Forest(
        feature=np.where(is_leaf, 0, features).astype(np.int32),
        threshold=values,
        mode=mode,
        true_child=true_child,
        false_child=false_child,
        set_lo=np.zeros(n, np.int32),
        set_hi=np.zeros(n, np.int32),
        set_values=np.zeros(0, np.float64),
        leaf_lo=leaf_lo,
        leaf_hi=leaf_hi,
        leaf_target=w_id[by_leaf].astype(np.int32),
        leaf_weight=w_val[by_leaf],
        roots=roots,
    )
    return forest, int(w_id.max(initial=-1))


def forest_v5(kernel: Kernel) -> Forest:
    """The node table of TreeEnsemble (ML opset 5): interior nodes, then one node per leaf."""
    features = _attr_array(kernel, ("nodes_featureids",), np.int64, True)
    splits = _attr_array(kernel, ("nodes_splits",), np.float64, True)
    modes = _attr_array(kernel, ("nodes_modes",), np.int64, True)
    true_ids = _attr_array(kernel, ("nodes_truenodeids",), np.int64, True)
    false_ids = _attr_array(kernel, ("nodes_falsenodeids",), np.int64, True)
    true_leaf = _attr_array(kernel, ("nodes_trueleafs",), np.int64, True)
    false_leaf = _attr_array(kernel, ("nodes_falseleafs",), np.int64, True)
    missing = _attr_array(kernel, ("nodes_missing_value_tracks_true",), np.int64)
    targets = _attr_array(kernel, ("leaf_targetids",), np.int64, True)
    weights = _attr_array(kernel, ("leaf_weights",), np.float64, True)
    roots = _attr_array(kernel, ("tree_roots",), np.int64, True)
    members = _attr_array(kernel, ("membership_values",), np.float64)
    n = len(features)
    _same_lengths(kernel, "nodes_featureids", n, missing, {
        "nodes_splits": splits, "nodes_modes": modes, "nodes_truenodeids": true_ids,
        "nodes_falsenodeids": false_ids, "nodes_trueleafs": true_leaf,
        "nodes_falseleafs": false_leaf})
    leaves = len(targets)
    if len(weights) != leaves:
        raise kernel.error(f"leaf_targetids has {leaves} entries but leaf_weights has "
                           f"{len(weights)}")
    if n == 0 or leaves == 0 or len(roots) == 0:
        raise kernel.error("the ensemble needs nodes, leaves and tree_roots")
    if ((modes < 0) | (modes > MEMBER)).any():
        raise kernel.error(f"nodes_modes must be in 0..{MEMBER}, got "
                           f"{int(modes[(modes < 0) | (modes > MEMBER)][0])}")
    if (features < 0).any():
        raise kernel.error("nodes_featureids must be >= 0")
    if ((roots < 0) | (roots >= n)).any():
        raise kernel.error(f"tree_roots must index the {n} nodes")
    if (targets < 0).any():
        raise kernel.error("leaf_targetids must be >= 0")

    def child(ids: np.ndarray, leaf: np.ndarray, what: str) -> np.ndarray:
        is_leaf = leaf != 0
        limit = np.where(is_leaf, leaves, n)
        if ((ids < 0) | (ids >= limit)).any():
            i = int(np.flatnonzero((ids < 0) | (ids >= limit))[0])
            kind = "leaf" if is_leaf[i] else "node"
            raise kernel.error(f"{what} of node {i} is {kind} {int(ids[i])}, out of range "
                               f"({int(limit[i])} {kind}s)")
        return np.where(is_leaf, n + ids, ids).astype(np.int32)

    true_child = np.concatenate([child(true_ids, true_leaf, "the true branch"),
                                 np.zeros(leaves, np.int32)])
    false_child = np.concatenate([child(false_ids, false_leaf, "the false branch"),
                                  np.zeros(leaves, np.int32)])
    mode = modes.astype(np.uint8)
    if missing is not None and len(missing):
        mode |= np.where(missing != 0, MISSING_TRUE, 0).astype(np.uint8)
    mode = np.concatenate([mode, np.full(leaves, LEAF, np.uint8)])

    set_lo = np.zeros(n + leaves, np.int32)
    set_hi = np.zeros(n + leaves, np.int32)
    member_nodes = np.flatnonzero(modes == MEMBER)
    set_values = np.zeros(0, np.float64)
    if len(member_nodes):
        if members is None:
            raise kernel.error("BRANCH_MEMBER nodes need membership_values")
        # groups delimited by NaN, one per BRANCH_MEMBER node in order
        cut = np.flatnonzero(np.isnan(members))
        bounds = np.concatenate([[-1], cut, [len(members)]])
        groups = [(int(bounds[i] + 1), int(bounds[i + 1])) for i in range(len(bounds) - 1)]
        if groups and groups[-1][0] == groups[-1][1] and len(groups) > len(member_nodes):
            groups.pop()  # a trailing NaN closes the last group
        if len(groups) != len(member_nodes):
            raise kernel.error(f"membership_values holds {len(groups)} sets for "
                               f"{len(member_nodes)} BRANCH_MEMBER nodes")
        set_values = members
        for node, (lo, hi) in zip(member_nodes.tolist(), groups):
            set_lo[node], set_hi[node] = lo, hi

    is_leaf = mode == LEAF
    node_roots = roots.astype(np.int32)
    _check_acyclic(kernel.where(), true_child, false_child, is_leaf, node_roots)
    leaf_lo = np.concatenate([np.zeros(n, np.int32), np.arange(leaves, dtype=np.int32)])
    return Forest(
        feature=np.concatenate([features, np.zeros(leaves, np.int64)]).astype(np.int32),
        threshold=np.concatenate([splits, np.zeros(leaves)]),
        mode=mode,
        true_child=true_child,
        false_child=false_child,
        set_lo=set_lo,
        set_hi=set_hi,
        set_values=set_values,
        leaf_lo=leaf_lo,
        leaf_hi=leaf_lo + is_leaf.astype(np.int32),
        leaf_target=targets.astype(np.int32),
        leaf_weight=weights,
        roots=node_roots,
    )


# ----- the kernels --------------------------------------------------------------------------------
def _compact(values, floating: bool) -> np.ndarray:
    """A numeric list attribute as the smallest array that holds it exactly (float32 for
    ONNX's float lists, int32 for ids that fit)."""
    arr = np.asarray(values)
    if floating:
        single = arr.astype(np.float32)
        return single if np.array_equal(single, arr, equal_nan=True) else arr
    arr = arr.astype(np.int64)
    small = arr.size == 0 or (arr.min() >= -2**31 and arr.max() < 2**31)
    return arr.astype(np.int32) if small else arr


class _TreeKernel(Kernel):
    """Shared input handling: X [N, F] (or [F]), validated against the forest."""

    forest: Forest

    @classmethod
    def pack_attributes(cls, attrs: dict) -> dict:
        """Node and leaf lists as typed arrays (stored as tensor data: a 500-tree forest's
        .edgert shrinks from 35 to ~8 MB and loads in a fraction of the time), string node
        modes as their codes, the unused hit rates dropped."""
        out = {}
        for name, value in attrs.items():
            if name.startswith("nodes_hitrates"):
                continue
            if name == "nodes_modes" and isinstance(value, (list, tuple)) and \
                    all(isinstance(m, str) and m in _V3_MODES for m in value):
                out[name] = np.array([_V3_MODES[m] for m in value], np.uint8)
            elif isinstance(value, (list, tuple)) and len(value) > 1 and \
                    np.asarray(value).dtype.kind in "if":
                out[name] = _compact(value, np.asarray(value).dtype.kind == "f")
            else:
                out[name] = value
        return out

    def _input(self, info: TensorInfo, allowed=_INPUTS) -> None:
        dt = np.dtype(info.dtype)
        if dt not in allowed:
            raise self.error(f"input X has dtype {dt}; expected one of "
                             f"{', '.join(str(d) for d in allowed)}", DTypeError)
        if info.shape is not None and len(info.shape) not in (1, 2):
            raise self.error(f"input X must be [N, F] (or [F]), got shape {info.shape}",
                             ShapeError)
        self._x_dtype = dt
        work = dt if dt in _FLOAT_INPUTS else np.dtype(np.float64)
        self._work = work
        # compared and summed in the input's precision: a float32 model (weights and
        # thresholds are float32 attributes) sums like onnxruntime, so exact ties (a random
        # forest's 0.5 probability) break the same way
        if getattr(self, "_nodes", None) is None or self._nodes["threshold"].dtype != work:
            self._nodes = pack_nodes(self.forest, work)
            self._weight = self.forest.leaf_weight.astype(work)
            self._max_feature = self.forest.max_feature
            self._leq_only = self.forest.leq_only
        if info.shape is not None:
            feats = info.shape[-1]
            if self._max_feature >= feats:
                raise self.error(f"the trees read feature {self._max_feature}, but X has "
                                 f"{feats} features", ShapeError)

    def _rows(self, info: TensorInfo) -> int | None:
        if info.shape is None:
            return None
        return 1 if len(info.shape) == 1 else info.shape[0]

    def _scores(self, x: np.ndarray, targets: int, agg: int):
        x2 = x.reshape(1, -1) if x.ndim == 1 else x
        if x2.shape[1] <= self._max_feature:
            raise self.error(f"the trees read feature {self._max_feature}, but X has "
                             f"{x2.shape[1]} features", InputError)
        x2 = np.ascontiguousarray(x2, dtype=self._work)
        return run_forest(self.forest, self._nodes, self._weight, x2, targets, agg,
                          self.op.num_threads, self._leq_only)


def _aggregate(scores: np.ndarray, has: np.ndarray, agg: int, trees: int,
               base: np.ndarray | None) -> np.ndarray:
    """Regressor finalization (onnxruntime's): average, then base values (one per target); with
    several targets, a target no reached leaf scored is 0 (base value or not)."""
    out = scores / trees if agg == AVERAGE else scores
    if agg in (MIN, MAX) and out.shape[1] == 1:
        out = np.where(has != 0, out, 0.0)
    if base is not None and len(base) == out.shape[1]:
        out = out + base
    if out.shape[1] > 1:
        out = np.where(has != 0, out, 0.0)
    return out


class TreeEnsembleRegressor(_TreeKernel):
    """TreeEnsembleRegressor (ML opsets 1 and 3): Y [N, n_targets] float32."""

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        if not hasattr(self, "forest"):  # built once per operator, not per re-plan
            self.forest, self._top = forest_v3(self, "target")
        top = self._top
        self._targets = int(self.attr("n_targets", top + 1))
        if self._targets < 1 or top >= self._targets:
            raise self.error(f"n_targets is {self._targets} but target_ids reach {top}")
        agg = self.attr("aggregate_function", "SUM")
        if agg not in _V3_AGGREGATES:
            raise self.error(f"aggregate_function must be one of {', '.join(_V3_AGGREGATES)}, "
                             f"got {agg!r}")
        self._agg = _V3_AGGREGATES[agg]
        self._post = check_post_transform(self.where(), self.attr("post_transform"))
        self._base = _attr_array(self, ("base_values", "base_values_as_tensor"), np.float64)
        self._input(inputs[0])
        rows = self._rows(inputs[0])
        return [TensorInfo(None if rows is None else (rows, self._targets), np.dtype(np.float32))]

    def invoke(self, inputs, outputs):
        scores, has = self._scores(inputs[0], self._targets, self._agg)
        out = _aggregate(scores, has, self._agg, len(self.forest.roots), self._base)
        y = apply_post_transform(out, self._post).astype(np.float32)
        if outputs[0] is None:
            return [y]
        outputs[0][...] = y
        return None


class TreeEnsemble(_TreeKernel):
    """TreeEnsemble (ML opset 5): Y [N, n_targets] in X's float type."""

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        if not hasattr(self, "forest"):
            self.forest = forest_v5(self)
        self._targets = int(self.attr("n_targets", 0))
        top = int(self.forest.leaf_target.max(initial=-1))
        if self._targets < 1 or top >= self._targets:
            raise self.error(f"n_targets is {self._targets} but leaf_targetids reach {top}")
        self._agg = int(self.attr("aggregate_function", SUM))
        if self._agg not in (AVERAGE, SUM, MIN, MAX):
            raise self.error(f"aggregate_function must be 0..3, got {self._agg}")
        post = int(self.attr("post_transform", 0))
        if not 0 <= post < len(_V5_TRANSFORMS):
            raise self.error(f"post_transform must be 0..4, got {post}")
        self._post = _V5_TRANSFORMS[post]
        floats = (np.dtype(np.float16), *_FLOAT_INPUTS)
        self._input(inputs[0], floats)
        rows = self._rows(inputs[0])
        shape = None if rows is None else (rows, self._targets)
        return [TensorInfo(shape, self._x_dtype)]

    def invoke(self, inputs, outputs):
        scores, has = self._scores(inputs[0], self._targets, self._agg)
        out = _aggregate(scores, has, self._agg, len(self.forest.roots), None)
        y = apply_post_transform(out, self._post).astype(self._x_dtype)
        if outputs[0] is None:
            return [y]
        outputs[0][...] = y
        return None


class TreeEnsembleClassifier(_TreeKernel):
    """TreeEnsembleClassifier (ML opsets 1 and 3): label [N] (int64 or string) and
    scores [N, classes] float32."""

    def prepare(self, inputs):
        self.require_inputs(inputs, 1, 1)
        self._labels, self._strings = class_labels(self, self.where())
        classes = len(self._labels)
        if classes == 0:
            raise self.error("the classifier has no class labels")
        if not hasattr(self, "forest"):
            self.forest, self._top = forest_v3(self, "class")
        top = self._top
        if top >= classes:
            raise self.error(f"class_ids reach {top} but there are {classes} class labels")
        self._post = check_post_transform(self.where(), self.attr("post_transform"))
        base = _attr_array(self, ("base_values", "base_values_as_tensor"), np.float64)
        self._base = np.zeros(0) if base is None else base
        ids = _attr_array(self, ("class_ids",), np.int64)
        weights = _attr_array(self, ("class_weights", "class_weights_as_tensor"), np.float64)
        self._binary = classes == 2 and ids is not None and len(np.unique(ids)) == 1
        self._positive = weights is None or bool((weights >= 0).all())
        self._input(inputs[0])
        rows = self._rows(inputs[0])
        label_dt = np.dtype(object) if self._strings else np.dtype(np.int64)
        return [TensorInfo(None if rows is None else (rows,), label_dt),
                TensorInfo(None if rows is None else (rows, classes), np.dtype(np.float32))]

    def invoke(self, inputs, outputs):
        classes = len(self._labels)
        scores, has = self._scores(inputs[0], classes, SUM)
        if classes > 2:
            index = np.empty(len(scores), np.int64)
            z = np.empty(scores.shape, np.float32) if outputs[1] is None else outputs[1]
            _finish_classes(scores, has, self._base, _POST_CODES[self._post], index, z)
            labels = self._labels[index]
            if outputs[0] is None:
                return [labels, z]
            outputs[0][...] = labels
            return None
        index, z = self._two_classes(scores, has)
        labels = self._labels[index]
        z = z.astype(np.float32)
        if outputs[0] is None:
            return [labels, z]
        outputs[0][...] = labels
        outputs[1][...] = z
        return None

    def _two_classes(self, scores, has):
        """onnxruntime's binary rules (see the module docstring)."""
        s0, s1 = scores[:, 0].copy(), scores[:, 1].copy()
        h0, h1 = has[:, 0] != 0, has[:, 1] != 0
        base = self._base
        second = -1  # how the second score is written when only one was computed
        if len(base) == 2:
            s1 = np.where(h1, base[1] + s0, s1 + base[1])
            s0 = np.where(h1, -s1, s0 + base[0])
        elif len(base) == 1:
            s0 = s0 + base[0]
        elif len(base) == 0:
            second = 3
        two = h1 | (len(base) not in (0, 1))  # rows that keep two scores
        pos = np.where(h1, s1, np.where(h0, s0, 0.0))
        if self._binary:
            if self._positive:
                win = pos > 0.5
                second = np.where(win, 0, 1)
            else:
                win = pos > 0
                second = np.where(win, 2, 3)
            index = win.astype(np.int64)
        else:
            index = (pos > 0).astype(np.int64)  # onnxruntime's labels 1 / 0 here
            second = np.full(len(pos), second)
        z = np.empty((len(pos), 2), np.float64)
        # a class no reached leaf scored reads 0, base value or not (onnxruntime)
        s0, s1 = np.where(h0, s0, 0.0), np.where(h1, s1, 0.0)
        both = np.stack([s0, s1], axis=1)
        z[two] = apply_post_transform(both[two], self._post)
        one = ~two
        if one.any():
            z[one] = self._second_score(s0[one], np.broadcast_to(second, len(pos))[one])
        return index, z

    def _second_score(self, s: np.ndarray, second: np.ndarray) -> np.ndarray:
        post = self._post
        out = np.zeros((len(s), 2), np.float64)
        if post == "PROBIT":  # (onnxruntime writes this column only; the other is left 0)
            out[:, 0] = probit(s)
            return out
        flip = (second == 0) | (second == 1)
        out[flip, 0], out[flip, 1] = 1.0 - s[flip], s[flip]
        for code, neg_first in ((2, True), (3, False)):
            sel = second == code
            if post == "LOGISTIC":
                out[sel, 0], out[sel, 1] = logistic(-s[sel]), logistic(s[sel])
            elif neg_first:
                out[sel, 0], out[sel, 1] = -s[sel], s[sel]
            else:
                out[sel, 0], out[sel, 1] = s[sel], -s[sel]
        none = second < 0
        out[none, 0] = s[none]
        return out


def register(reg: KernelRegistry) -> None:
    ml = "ai.onnx.ml"
    reg.add("TreeEnsembleClassifier", TreeEnsembleClassifier, domain=ml, since=1)
    reg.add("TreeEnsembleRegressor", TreeEnsembleRegressor, domain=ml, since=1)
    reg.add("TreeEnsemble", TreeEnsemble, domain=ml, since=5)
