"""Control flow: If, Loop and Scan, running their bodies with nested interpreters.

A body is a :class:`~edgert.format.SubGraphDef` attribute. The importer makes every
enclosing-scope value a body reads an explicit trailing input of the node and names them, in
order, in the attribute ``edgert_outer_inputs``; here each body becomes a small
:class:`~edgert.runtime.Interpreter` over a copy of its subgraph whose inputs are the body's own
inputs followed by the outer values it reads. Body inputs get an unknown rank in that copy: a
loop-carried value may change shape from one iteration to the next, and the nested interpreter
re-plans its arena when it does.

Outputs are only known after the body ran (which branch, how many iterations), so these
kernels report unknown output shapes at prepare and return the arrays they built from invoke.
Sequence- and optional-typed values (edgert/runtime/values.py) pass through bodies, branches and
loop-carried values as they are (lists, arrays or None).

Resource limits (:mod:`edgert.runtime.limits`): a body's interpreter shares the limits and the
deadline of the interpreter that runs the node; Loop and Scan check ``max_loop_iterations`` and
the ``timeout_s`` deadline before every iteration, and ``max_alloc_bytes`` before stacking their
scan outputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgert import dtypes
from edgert.errors import KernelError, ShapeError
from edgert.format import ModelDef, SubGraphDef
from edgert.runtime.limits import inherited_by_bodies
from edgert.runtime.registry import Kernel, KernelRegistry, OpTraits, TensorInfo


class Body:
    """One control-flow body, runnable as ``body(inputs, outer) -> outputs``."""

    def __init__(self, where: str, sub: SubGraphDef, outer_names: list[str], num_threads: int):
        from edgert.runtime.interpreter import Interpreter  # import cycle: interpreter → cpu

        self.where = where
        self.sub = sub
        by_name = {t.name: i for i, t in enumerate(sub.tensors)}
        reads = [n for n in outer_names if n in sub.outer_inputs and n in by_name]
        self.outer_names = reads
        inputs = list(sub.inputs) + [by_name[n] for n in reads]
        tensors = list(sub.tensors)
        for i in inputs:
            t = tensors[i]
            if not dtypes.is_known(t.dtype) and not t.kind:
                raise KernelError(f"{where}: body input '{t.name}' has no tensor element type")
            tensors[i] = dataclasses.replace(t, shape=(), shape_signature=None, unknown_rank=True)
        for i in sub.outputs:
            if not dtypes.is_known(tensors[i].dtype) and tensors[i].data is None and \
                    not tensors[i].kind:
                raise KernelError(f"{where}: body output '{tensors[i].name}' has no tensor "
                                  "element type")
        copy = dataclasses.replace(sub, tensors=tensors, inputs=inputs)
        self.input_names = [tensors[i].name for i in sub.inputs]
        self.output_dtypes = [
            dtypes.to_numpy(tensors[i].dtype) if dtypes.is_known(tensors[i].dtype)
            else np.dtype(np.float32) for i in sub.outputs
        ]
        self.num_inputs = len(sub.inputs)
        self.num_outputs = len(sub.outputs)
        self.interp = Interpreter(ModelDef([copy]), num_threads=num_threads or None)

    def plan(self, outer: dict[str, TensorInfo | None]) -> list[TensorInfo] | None:
        """Plan the body for outer values of these shapes (a body without inputs of its own:
        If's branches); the output TensorInfos when all their shapes are then known, else None.
        """
        interp = self.interp
        if self.num_inputs:
            return None
        for name in self.outer_names:
            info = outer.get(name)
            if info is None or info.shape is None or np.dtype(info.dtype) == np.dtype(object):
                return None
            interp.resize_tensor_input(name, info.shape)
        interp.allocate_tensors()
        outs = []
        for i in interp._graph.outputs:
            info = interp._infos[i]
            if info is None or info.shape is None or np.dtype(info.dtype) == np.dtype(object):
                return None
            outs.append(TensorInfo(tuple(info.shape), np.dtype(info.dtype)))
        return outs

    def __call__(self, inputs: list[np.ndarray], outer: dict[str, np.ndarray]) -> list[np.ndarray]:
        feeds = dict(zip(self.input_names, inputs))
        for n in self.outer_names:
            feeds[n] = outer[n]
        results = self.interp.run(feeds)
        return [results[n] for n in self.interp.output_names]


class _ControlFlow(Kernel):
    """Shared set-up: the outer values and the bodies."""

    def _outer(self, n_inputs: int) -> tuple[int, list[str]]:
        names = list(self.attr("edgert_outer_inputs", []) or [])
        if len(names) > n_inputs:
            raise self.error("fewer inputs than the outer values its bodies read")
        return n_inputs - len(names), names

    def _body(self, attr: str, names: list[str]) -> Body:
        """The body of graph attribute ``attr``, built once per kernel: a control-flow op's
        outputs are only known after it ran, so the interpreter prepares it again at every
        invoke, and a new nested interpreter per prepare cost more than the body's work (an
        If-heavy voice-activity model ran 9-10x slower than onnxruntime). The nested
        interpreter re-plans by itself when its feeds change shape."""
        sub = self.attr(attr)
        if not isinstance(sub, SubGraphDef):
            raise self.error(f"attribute '{attr}' must be a graph")
        bodies = self.__dict__.setdefault("_bodies", {})
        key = (attr, tuple(names))
        body = bodies.get(key)
        if body is None or body.sub is not sub:
            # the body's interpreter (whichever Body class builds it) shares this op's limits
            where = f"{self.where()} ({attr})"
            with inherited_by_bodies(self.limits, where):
                body = bodies[key] = Body(where, sub, names, self.op.num_threads)
        return body

    def _stack(self, parts: list[np.ndarray], what: str) -> np.ndarray:
        """``np.stack(parts)`` within ``max_alloc_bytes``."""
        self.limits.check_alloc(self.where(), sum(p.nbytes for p in parts),
                                f"{what} stacked over {len(parts)} iterations")
        return np.stack(parts)

    @staticmethod
    def _outer_feeds(names: list[str], arrays: list[np.ndarray | None]) -> dict:
        return dict(zip(names, arrays))


class If(_ControlFlow):
    """If: run ``then_branch`` or ``else_branch`` on a scalar bool condition."""

    traits = OpTraits(moves_bits=True, takes_sequences=True)

    def prepare(self, inputs):
        n_own, names = self._outer(len(inputs))
        if n_own != 1 or inputs[0] is None:
            raise self.error("expects exactly one condition input")
        if inputs[0].shape is not None and int(np.prod(inputs[0].shape)) != 1:
            raise self.error(f"condition must hold one element, got shape {inputs[0].shape}",
                             ShapeError)
        self._names = names
        self._then = self._body("then_branch", names)
        self._else = self._body("else_branch", names)
        if self._then.num_outputs != self._else.num_outputs:
            raise self.error("then_branch and else_branch have different numbers of outputs")
        # A condition known when planning (a constant, or computed from shapes: TorchScript's
        # exports test the input's size) picks its branch now; planned for the outer values'
        # shapes, the branch's outputs have shapes too and the If is an ordinary step, with
        # everything after it planned instead of prepared again at every run.
        cond = inputs[0].value
        if cond is not None and np.asarray(cond).size == 1:
            body = self._then if bool(np.asarray(cond).reshape(-1)[0]) else self._else
            outs = body.plan(dict(zip(names, inputs[1:])))
            if outs is not None:
                return outs
        return [TensorInfo(None, dt) for dt in self._then.output_dtypes]

    def invoke(self, inputs, outputs):
        cond = bool(np.asarray(inputs[0]).reshape(-1)[0])
        body = self._then if cond else self._else
        results = body([], self._outer_feeds(self._names, inputs[1:]))
        if not outputs or outputs[0] is None:
            return results
        for out, res in zip(outputs, results):  # a planned step: into its buffers
            if out is not None:
                if out.shape != np.shape(res):
                    raise self.error(f"the branch gave shape {np.shape(res)} where its plan "
                                     f"said {out.shape}", ShapeError)
                np.copyto(out, res)
        return None


class Loop(_ControlFlow):
    """Loop: ``for i in range(M) while cond`` over loop-carried values, stacking scan outputs."""

    traits = OpTraits(moves_bits=True, takes_sequences=True)

    def prepare(self, inputs):
        n_own, names = self._outer(len(inputs))
        own = list(inputs[:n_own]) + [None] * max(0, 2 - n_own)
        self._n_own = n_own
        self._names = names
        self._body_ = self._body("body", names)
        n_carried = max(0, n_own - 2)
        if self._body_.num_inputs != n_carried + 2:
            raise self.error(f"body takes {self._body_.num_inputs} inputs; expected "
                             f"{n_carried + 2} (iteration, condition, {n_carried} carried)")
        if self._body_.num_outputs < n_carried + 1:
            raise self.error("body has fewer outputs than condition + loop-carried values")
        for k, what in ((0, "M"), (1, "cond")):
            if own[k] is not None and own[k].shape is not None and \
                    int(np.prod(own[k].shape)) != 1:
                raise self.error(f"{what} must hold one element, got shape {own[k].shape}",
                                 ShapeError)
        self._n_carried = n_carried
        return [TensorInfo(None, dt) for dt in self._body_.output_dtypes[1:]]

    def invoke(self, inputs, outputs):
        own = list(inputs[: self._n_own]) + [None] * max(0, 2 - self._n_own)
        outer = self._outer_feeds(self._names, inputs[self._n_own:])
        # no trip count: the condition alone stops the loop (max_loop_iterations caps both)
        m = None if own[0] is None else int(np.asarray(own[0]).reshape(-1)[0])
        cond = True if own[1] is None else bool(np.asarray(own[1]).reshape(-1)[0])
        limits = self.limits
        where = self.where()
        carried = [x if x is None or type(x) is list else np.asarray(x)  # sequence/optional
                   for x in own[2: 2 + self._n_carried]]
        scans: list[list[np.ndarray]] = [[] for _ in range(self._body_.num_outputs - 1
                                                           - self._n_carried)]
        i = 0
        while (m is None or i < m) and cond:
            limits.check_iterations(where, i + 1)
            limits.check_deadline(where)
            res = self._body_([np.array(i, np.int64), np.array(cond), *carried], outer)
            cond = bool(np.asarray(res[0]).reshape(-1)[0])
            carried = res[1: 1 + self._n_carried]
            for k, r in enumerate(res[1 + self._n_carried:]):
                scans[k].append(r)
            i += 1
        stacked = []
        for k, parts in enumerate(scans):
            dt = self._body_.output_dtypes[1 + self._n_carried + k]
            if not parts:
                stacked.append(np.zeros((0,), dt))
                continue
            if any(p.shape != parts[0].shape for p in parts):
                raise KernelError(f"{self.where()}: scan output {k} changes shape between "
                                  "iterations; it cannot be stacked")
            stacked.append(self._stack(parts, f"scan output {k}"))
        return [*carried, *stacked]


class Scan(_ControlFlow):
    """Scan (opset 9+): iterate a body over slices of the scan inputs along their axes."""

    traits = OpTraits(moves_bits=True)

    def prepare(self, inputs):
        n_own, names = self._outer(len(inputs))
        self._n_own, self._names = n_own, names
        n_scan = int(self.attr("num_scan_inputs", 0))
        if not 0 < n_scan <= n_own:
            raise self.error(f"num_scan_inputs={n_scan} does not fit {n_own} inputs")
        self._n_state = n_own - n_scan
        self._n_scan = n_scan
        self._body_ = self._body("body", names)
        if self._body_.num_inputs != n_own:
            raise self.error(f"body takes {self._body_.num_inputs} inputs, expected {n_own}")
        n_scan_out = self._body_.num_outputs - self._n_state
        if n_scan_out < 0:
            raise self.error("body has fewer outputs than state variables")
        self._n_scan_out = n_scan_out
        self._in_axes = list(self.attr("scan_input_axes", [0] * n_scan))
        self._in_dirs = list(self.attr("scan_input_directions", [0] * n_scan))
        self._out_axes = list(self.attr("scan_output_axes", [0] * n_scan_out))
        self._out_dirs = list(self.attr("scan_output_directions", [0] * n_scan_out))
        if len(self._in_axes) != n_scan or len(self._in_dirs) != n_scan or \
                len(self._out_axes) != n_scan_out or len(self._out_dirs) != n_scan_out:
            raise self.error("scan axes/directions attributes have the wrong length")
        for k in range(n_scan):
            info = inputs[self._n_state + k]
            if info is not None and info.shape is not None:
                self.normalize_axis(int(self._in_axes[k]), len(info.shape))
        return [TensorInfo(None, dt) for dt in self._body_.output_dtypes]

    def invoke(self, inputs, outputs):
        outer = self._outer_feeds(self._names, inputs[self._n_own:])
        states = [np.asarray(x) for x in inputs[: self._n_state]]
        scans_in = []
        length = None
        for k in range(self._n_scan):
            x = np.asarray(inputs[self._n_state + k])
            axis = self.normalize_axis(int(self._in_axes[k]), x.ndim)
            x = np.moveaxis(x, axis, 0)
            if self._in_dirs[k]:
                x = x[::-1]
            if length is None:
                length = x.shape[0]
            elif x.shape[0] != length:
                raise KernelError(f"{self.where()}: scan inputs have different lengths")
            scans_in.append(x)
        parts: list[list[np.ndarray]] = [[] for _ in range(self._n_scan_out)]
        limits = self.limits
        where = self.where()
        limits.check_iterations(where, length or 0)  # the count is known: fail before the first
        for t in range(length or 0):
            limits.check_deadline(where)
            res = self._body_([*states, *(np.array(x[t], order="C") for x in scans_in)], outer)
            states = res[: self._n_state]
            for k, r in enumerate(res[self._n_state:]):
                parts[k].append(r)
        outs = []
        for k, p in enumerate(parts):
            dt = self._body_.output_dtypes[self._n_state + k]
            y = self._stack(p, f"scan output {k}") if p else np.zeros((0,), dt)
            if self._out_dirs[k]:
                y = y[::-1]
            axis = int(self._out_axes[k])
            axis = axis + y.ndim if axis < 0 else axis
            outs.append(np.array(np.moveaxis(y, 0, axis), order="C"))
        return [*states, *outs]


def register(reg: KernelRegistry) -> None:
    reg.add("If", If)
    reg.add("Loop", Loop)
    reg.add("Scan", Scan, since=9)
