"""The fused path of explicit Runge-Kutta and Rosenbrock solves: the loop as tensor code, gradients
parallel in time.

The reference loop (:class:`._integrate.Loop`) spends most of a small problem's time outside the
arithmetic: a few hundred tiny torch ops per step, a host synchronisation per step, and, for
gradients, autograd replaying all of them backwards. Here the same iteration (the same step sizes,
the same accept/reject decisions, the same return codes) is written without data-dependent Python
control flow, so that ``chunk`` iterations run as one call that ``torch.compile`` can fuse, with one
host synchronisation per call.

The forward solve keeps no autograd graph. It records each iteration's start ``(t, y)``, its step
(zero for members that rejected it or had finished) and its end time. When something is to be
differentiated, the outputs are then recomputed for all recorded steps at once: the step map
``Φ_r: y_r -> y_{r+1}`` and the continuous extension at the save times, ``vmap``-ed over the records
(without a graph only the steps that hold a save time are). Gradients are those of the discrete
solution (``DirectAdjoint``: backpropagation through the solver), assembled in a different order:

* ``λ_r = J_rᵀ λ_{r+1} + d_r`` is the only sequential part, and a parallel scan at that. Eager,
  ``J_r = ∂Φ_r/∂y_r`` comes from ``n`` vector-Jacobian products batched over all records (``n`` the
  state size) and ``d_r`` from one more. Compiled, the recomputation itself is compiled, and the
  ``J_r`` (with the save times' Jacobians, which give ``d_r``) come from ``n`` Jacobian-vector
  products in one more compiled call: a compiled backward pass can run only once, and in compiled
  code forward mode does not pay eager PyTorch's cost of zero tangents.
* The parameter gradient is one batched backward pass through the recomputed ``Φ`` with the
  cotangents ``λ_{r+1}``, so closures, ``p`` and ``nn.Module`` parameters are reached as by any
  autograd graph. A hook on the recomputed outputs swaps in the ``λ`` before that pass runs.

For states larger than :data:`_JACOBIAN_MAX_STATES` the ``J_r`` would cost more than they save; the
recursion then takes one vector-Jacobian product per record instead.

Uncompiled, one problem on the CPU runs the same iteration with its control in Python floats
(:mod:`._fused_scalar`): there the control's one-element tensor operations would cost more than
the step's arithmetic.

Rosenbrock methods take :meth:`RosenbrockStepper.fused_step`: the Jacobian formed afresh in every
iteration (the reference reuses it after a rejection: the same values) and, up to
:data:`._small_lu.SMALL_LU_MAX` species, the iteration matrix factorised by LU written out in
elementwise operations, which the compiled chunk fuses with the stages.

Python side effects in ``f`` (see :class:`_Compiled`): an integer that ``f`` changes (a call
counter) is compiled as a symbolic int after its first change, so it costs one more compile and
then counts ``f``'s calls in the compiled code; any other change of Python state that the compiled
chunk depends on, seen between two chunks of one solve, sends that kind of solve to the eager fused
loop, with one warning.
"""
from __future__ import annotations

import contextlib
import re
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from .._retcode import ReturnCode
from ._controller import attempt_error, controlled_step, shared_error, shared_step
from ._integrate import (_LAND_SLACK_ADAPTIVE, _LAND_SLACK_FIXED, _MAX_NONFINITE_STREAK, Loop, RawSolution,
                         SolveOptions, dt_floor)
from ._fused_scalar import scalar_control_applies, scalar_forward
from ._saving import interpolate

__all__ = ["fused_integrate", "fused_unsupported", "DEFAULT_CHUNK"]

#: loop iterations per call of the compiled chunk: amortises the guards and wrapper of a call
#: (0.1-0.3 ms measured) against iterations wasted after the last member finished and against
#: compile time, which grows with it
DEFAULT_CHUNK = 8
#: Rosenbrock iterations per call: the compile time grows with the unrolled iterations, a Jacobian and
#: eight stage solves each. Robertson on its analytic f (to 1e11, reltol 1e-6, cold cache): 1 -> 12 s
#: to compile, 8.9 ms per solve; 2 -> 20 s, 9.5 ms; 4 -> 32 s, 5.5 ms; 8 -> 61 s, 3.6 ms. Through a
#: network every iteration traces its layers 9 times: Kim et al.'s ROBER network took 212 s to compile
#: 8 iterations and 23 s for one, at the same time per epoch (22.7 against 22.5 ms).
_ROSENBROCK_CHUNK = 4
_NEURAL_ROSENBROCK_CHUNK = 1


def _default_chunk(compiled: bool) -> int:
    return DEFAULT_CHUNK if compiled else 1


def _neural(f: Callable, p) -> bool:
    """Does ``f`` evaluate a network: a module in ``p``, or one that ``f`` reaches with trainable
    parameters?"""
    from .._params import captures_trainable, parameter_leaves

    return bool(parameter_leaves(p)[2]) or captures_trainable(f)
#: the largest state for which the backward pass forms the per-step Jacobians
_JACOBIAN_MAX_STATES = 32
#: Compiled solves recompute their outputs compiled, with the Jacobians by forward mode, up to this
#: many state entries (batch × n); larger batches are arithmetic-bound, where the padded records and
#: the n forward-mode passes cost more than they save. Measured fwd + grad: spiral (1 × 2) 4.15 ->
#: 2.84 ms, ode_demo windows (20 × 2) 3.9 -> 2.9 ms; batch 4096 × 2, float32: 241 -> 434 ms.
_COMPILED_OUTPUTS_MAX_ELEMENTS = 2048
#: Matrix products with at most this many rows (batch members) are written out as loops that
#: inductor fuses with the step's other arithmetic, on the CPU. Kept as BLAS calls, the tiny
#: products of a small network cost ~4 µs each and split every stage into separate kernels:
#: measured on the spiral (1 row, 2-50-2 network), 4.7 ms -> 2.7 ms for 40 iterations, at the price
#: of a longer first compile.
_DECOMPOSE_MM_ROWS = 16
#: On the CPU the compiled chunk is one C++ kernel with a few hundred small intermediate buffers
#: (none can be reused: they are all live inside that one kernel). Allocating them from a C++
#: wrapper rather than a Python one takes ~0.1 ms off each call: spiral training iteration
#: 11.9 -> 10.8 ms, measured side by side.
#: Its intermediates are then placed on the C++ stack instead (inductor does so while they total at
#: most 100 kB; past that they stay on the heap): each of them otherwise costs a ``posix_memalign``, a
#: ``free`` and a ``TensorImpl``, ~40 % of a call in ``malloc`` alone (``perf``). Robertson, Rodas5P,
#: one chunk call of 8 iterations 256 -> 44 µs, one solve 6.3 -> 1.8 ms (LSODA: 2.6 ms); spiral
#: forward chunks 1.75 -> 0.88 ms per training iteration. See :func:`_stack_allocating_cpp_wrapper`.
_CPU_INDUCTOR_OPTIONS = {
    "cpp_wrapper": True, "aot_inductor.allow_stack_allocation": True,
    "post_grad_fusion_options": {"decompose_mm_pass": {"cpu_max_first_dimension_decomposition": _DECOMPOSE_MM_ROWS}}}

#: The outputs' recomputation is compiled without it: its forward's outputs include the tensors
#: autograd keeps for the backward pass, which must outlive the next call.
_CPU_OUTPUT_OPTIONS = {k: v for k, v in _CPU_INDUCTOR_OPTIONS.items() if k != "aot_inductor.allow_stack_allocation"}


def _padded_count(S: int) -> int:
    """Records are padded to one of 8, 12, 16, 24, 32, 48, 64, 96, ... (at most 50 % more, 25 % on
    average), so that the compiled outputs' functions, each compile of which takes seconds, are
    compiled for a few counts only (3 between 49 and 128)."""
    if S <= 8:
        return 8
    base = 1 << ((S - 1).bit_length() - 1)          # the power of two below S
    return base * 3 // 2 if base * 3 // 2 >= S else 2 * base


#: (function, kind) of the outputs' functions that torch.compile could not compile: not retried
_NOT_COMPILED: set = set()
#: A Rosenbrock solve's outputs compile only once their eager recomputation, for the same kind of
#: solve and padded record count, has cost about what that compile costs (ski rental: never more
#: than twice the better of the two). Compiling them at once made first calls too slow, measured
#: with the gradient: a Robertson solve's (152 steps) 12 -> 49 s for 11.7 -> 4.4 ms per solve
#: afterwards; Kim et al.'s ROBER network 20 -> 77 s for 17 -> 7.5 ms per epoch, and another such
#: compile for each new bucket of step counts as the network stiffens. Explicit methods compile
#: their outputs at once (7-14 s; spiral iteration 4.3 -> 3.3 ms).
_OUTPUTS_COMPILE_BUDGET_S = 30.0
#: eager seconds spent so far per (kind, output mode, save times, padded count), as counted above
_EAGER_OUTPUT_SECONDS: dict = {}
#: the backward pass through the eagerly recomputed outputs costs about twice their recomputation
_EAGER_BACKWARD_FACTOR = 2.0


class _NotCompiled(Exception):
    """An outputs' function could not be compiled for this kind of solve; its eager form applies."""


def _from_compiler(err: Exception) -> bool:
    return type(err).__module__.startswith(("torch._dynamo", "torch._inductor"))


#: one compiled chunk per kind of solve (see :func:`_compiled_run_chunk`)
_COMPILED: dict = {}


def _compiled_run_chunk(key: tuple, device_type: str) -> Callable:
    """``_FusedLoop.run_chunk`` under ``torch.compile`` (the loop passed as its first argument), one
    per ``key``: the kind of solve (``f``'s code, method, controller, dtype, device, shapes, chunk).

    Dynamo keeps its compiled code, and counts recompilations against ``recompile_limit`` (8), per
    code object, and checks the guards of a code object's entries one after another on every call.
    With a single ``run_chunk`` for the whole process, a ninth kind of solve would hit that limit
    and every call would check the guards of all kinds before it. So each kind gets its own copy
    of ``run_chunk``'s code object: its cache holds the variants of that kind only (a closure's
    different values, say), and the limit applies per kind.
    """
    return _compiled(_FusedLoop.run_chunk, key, _CPU_INDUCTOR_OPTIONS if device_type == "cpu" else {}, False)


def _compiled(fn: Callable, key: tuple, options: dict, dynamic: Optional[bool]) -> "_Compiled":
    """``fn`` under ``torch.compile``, on its own copy of ``fn``'s code object per ``key`` (see
    :func:`_compiled_run_chunk`)."""
    key = (fn.__qualname__,) + key
    run = _COMPILED.get(key)
    if run is None:
        code = fn.__code__.replace(co_name=f"{fn.__name__}_{len(_COMPILED)}")
        copy = type(fn)(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
        run = _COMPILED[key] = _Compiled(torch.compile(copy, fullgraph=True, dynamic=dynamic, options=options))
    return run


#: A guard on a Python int that failed, as torch 2.13 lists it in a recompilation's reasons, a global's
#: source as dynamo names it, a local's by its variable: ``- 0/0: G['calls'][0] == 48  # ...`` or
#: ``- 0/0: self.f.p.nfe == 46  # ...`` (an ``nn.Module`` attribute reached from the frame's ``self``).
_FAILED_INT_GUARD = re.compile(r"^\s*-\s*\d+/\d+:\s*(?:(?P<glob>G\[[^,\s]*)|(?P<local>[A-Za-z_]\w*)(?P<rest>(?:\.\w+|\[[^,\s\]]*\])*))"
                               r"\s*==\s*-?\d+\s*(?:#.*)?$", re.M)


def _failed_int_sources(message: str) -> set:
    """The sources (dynamo's names) of the int guards that failed, from a recompilation's reasons."""
    return {m["glob"] or f"L[{m['local']!r}]{m['rest']}" for m in _FAILED_INT_GUARD.finditer(message)}


class _PythonStateChanged(Exception):
    """Between two chunks of one solve, f changed Python state that the compiled chunk depends on,
    and not an int that could be made symbolic: compiled, every chunk would recompile."""


class _Compiled:
    """A ``torch.compile``d function that does not recompile for the Python ints ``f`` changes.

    Dynamo specialises a compiled function on every Python int it reads from a closure, a global
    or an attribute, and guards on its value. An ``f`` that counts its calls (``calls[0] += 1``,
    ``self.nfe += 1``, a ``nonlocal`` or ``global`` counter) therefore fails the guard of the code
    compiled for it at the next call: compiled per chunk, the solve recompiled until
    ``recompile_limit`` and failed. So every call after the first runs under the
    ``fail_on_recompile`` stance (7 µs a call), which turns a recompilation into an error instead;
    the int guards that failed name their sources, which are compiled as symbolic ints from then
    on (``torch.compiler.config.dynamic_sources``): one more compile, after which the counter is an
    input and output of the compiled code and counts ``f``'s calls in it, chunk by chunk. A
    recompilation for anything else (a new tensor shape, a changed float in ``f``'s closure) goes
    ahead, unless the caller says that nothing may have changed (two chunks of one solve): then
    :class:`_PythonStateChanged`.
    """

    def __init__(self, run: Callable):
        self.run = run
        self.called = False
        self.sources: set = set()        # int sources compiled as symbolic ints

    def __call__(self, *args, same_variant: bool = False):
        if self.called:
            try:
                with torch.compiler.set_stance("fail_on_recompile"):
                    return self.run(*args)
            except RuntimeError as err:
                if "fail_on_recompile" not in str(err):
                    raise
                learned = _failed_int_sources(str(err)) - self.sources
                if not learned and same_variant:
                    raise _PythonStateChanged(str(err)) from None
                self.sources |= learned
        self.called = True
        if not self.sources:
            return self.run(*args)
        dynamic = ",".join(filter(None, [torch.compiler.config.dynamic_sources]
                                  + [re.escape(s) for s in sorted(self.sources)]))
        with torch.compiler.config.patch(dynamic_sources=dynamic):
            return self.run(*args)


#: kinds of solve whose f changes Python state the compiled chunk depends on: run eagerly
_EAGER_KINDS: set = set()


@contextlib.contextmanager
def _stack_allocating_cpp_wrapper():
    """While compiled chunks run (and so are compiled): inductor's C++ wrapper for the CPU that can
    place intermediates on the stack.

    Inductor picks the CPU's C++ wrapper class once per process, when it first compiles anything,
    from ``aot_inductor.allow_stack_allocation`` as configured at that moment; our per-compile
    option alone would therefore be ignored whenever something else compiled first. The class is
    swapped in for our calls only and restored after them, so that other ``torch.compile`` users
    in the process keep inductor's default. Without the class (another torch), chunks run as before.
    """
    try:
        from torch._inductor.codegen import common
        from torch._inductor.codegen.cpp_wrapper_cpu_array_ref import CppWrapperCpuArrayRef
        common.init_backend_registration()
        codegen = common.device_codegens["cpu"]
        previous = codegen.cpp_wrapper_codegen
    except (ImportError, AttributeError, KeyError):
        yield
        return
    codegen.cpp_wrapper_codegen = CppWrapperCpuArrayRef
    try:
        yield
    finally:
        codegen.cpp_wrapper_codegen = previous


def fused_unsupported(alg, opts: SolveOptions) -> Optional[str]:
    """Why the fused path cannot run this solve (completing "the fused path ..."), or None."""
    from ..algorithms import AbstractExplicitRK, AbstractRosenbrock

    if not isinstance(alg, (AbstractExplicitRK, AbstractRosenbrock)):
        return (f"covers explicit Runge-Kutta methods (Tsit5, DP5, Vern7, BS3, RK4, ...) and Rosenbrock "
                f"methods (Rodas5P, Rodas4, Rosenbrock23), not {alg!r}")
    if isinstance(alg, AbstractRosenbrock) and not alg.autodiff:
        return "forms Jacobians by AD or the problem's jac, not by finite differences (autodiff=False)"
    if opts.dense:
        return "has no dense output: pass saveat= or dense=False"
    if opts.tstops is not None:
        return "does not take tstops"
    if opts.progress:
        return "shows no progress bar"
    return None


@dataclass
class _Records:
    """What the forward solve keeps of each loop iteration, stacked: ``(S, B)`` and ``(S, B, n)``."""

    t: torch.Tensor         # start time of the iteration
    hs: torch.Tensor        # signed step taken (0 unless accepted)
    t_end: torch.Tensor     # end time of the step taken (t unless accepted)
    y: torch.Tensor         # state at the start
    ok: torch.Tensor        # accepted


def _moving(records: _Records) -> _Records:
    """The records up to the last iteration in which a member moved: iterations after the last
    accepted step (the end of the last chunk) move nobody."""
    moved = torch.nonzero(records.ok.any(1))
    keep = int(moved[-1]) + 1 if moved.numel() else 1
    return _Records(*(x[:keep] for x in (records.t, records.hs, records.t_end, records.y, records.ok)))


class _FusedLoop:
    """One solve on the fused path; the setup (first step size, stops, controller) is the reference
    loop's own, so both start from identical values."""

    def __init__(self, f_user: Callable, u0: torch.Tensor, p, make_stepper: Callable, opts: SolveOptions,
                 batch_shape: torch.Size, compiled: bool, chunk: int):
        self.loop = loop = Loop(f_user, u0, p, make_stepper, opts, batch_shape)
        with torch.no_grad():
            loop.begin(u0.detach())
        self.opts, self.compiled, self.chunk = opts, compiled, chunk
        self.f, self.stepper, self.ctrl = loop.f, loop.stepper, loop.ctrl
        self.n, self.B, self.direction = loop.n, loop.B, loop.direction
        self.slack = _LAND_SLACK_ADAPTIVE if opts.adaptive else _LAND_SLACK_FIXED
        dev = loop.dev
        # Everything that varies between solves enters the chunk as a tensor, not as a Python
        # number a compiled chunk would be specialised on.
        self.stops = loop.stops
        # tolerances as tensors too: as Python floats every new tolerance recompiled the chunk
        self.reltol, self.abstol = (torch.as_tensor(tol, dtype=torch.float64, device=dev)
                                    for tol in (loop.reltol, loop.abstol))
        self.dtmin = torch.tensor(opts.dtmin, dtype=torch.float64, device=dev)
        self.maxiters = torch.tensor(opts.maxiters, dtype=torch.long, device=dev)
        # the stages after the first, and f at the accepted state when the last stage is not it
        stages = len(self.stepper.c)
        self.evals_per_iteration = stages - 1 + (0 if self.stepper.tableau.fsal else 1)
        # Rosenbrock methods: the pure step (no Jacobian cache, no counters; small LU written out),
        # with one Jacobian, one factorisation and a solve per stage in every iteration
        self.step_fn = getattr(self.stepper, "fused_step", self.stepper.step)
        implicit = self.implicit = hasattr(self.stepper, "fused_step")
        if implicit and not compiled:
            self.stepper.jacobian.reverse_mode = True
        # a Rosenbrock stage solve refined from a residual counts as two (as the reference loop counts it)
        solves = stages * (2 if getattr(self.stepper, "refine", False) else 1)
        self.work_per_iteration = (int(implicit), int(implicit), solves * int(implicit))
        self.iterations = 0

    def kind(self) -> tuple:
        """What tells this solve's compiled chunk from another's (see :func:`_compiled_run_chunk`)."""
        f = self.loop.f.f
        tableau = getattr(self.stepper, "tableau", None)
        try:
            hash(tableau)           # by value: a user's tableau rebuilt for every solve is the same kind
        except TypeError:
            tableau = id(tableau)
        return (getattr(f, "__code__", type(f)), type(self.stepper), tableau, type(self.ctrl), self.loop.y.dtype,
                str(self.loop.dev), self.B, self.n, self.chunk)

    # ---- the forward loop ---------------------------------------------------------------------
    def initial_state(self) -> tuple:
        lp = self.loop
        return (lp.t, lp.y, lp.k1, lp.h, lp.done, lp.retcode, lp.iters, lp.naccept, lp.nreject, lp.streak,
                lp.si, self.loop.hmax, self.stops, self.dtmin, self.maxiters, *lp.ctrl_state)

    def iteration(self, state: tuple) -> Tuple[tuple, tuple]:
        """One loop iteration of every member, as :meth:`Loop.iterate` takes it (no tstops, no saving)."""
        (t, y, k1, h, done, retcode, iters, naccept, nreject, streak, si, hmax, stops, dtmin, maxiters,
         *cstate) = state
        # Evaluations are counted per iteration outside (a counter read inside a compiled chunk would
        # be a guard that fails on every call).
        direction, ctrl, opts, f = self.direction, self.ctrl, self.opts, self.f.uncounted
        n_stops = stops.shape[0]
        active = ~done
        stop = stops[si.clamp(max=n_stops - 1)]
        dist = direction * (stop - t)
        h_try = torch.minimum(h, hmax)
        land = active & (h_try * self.slack >= dist)
        h_used = torch.where(land, dist, h_try)
        hs = torch.where(active, direction * h_used, torch.zeros_like(h_used))
        t_new = torch.where(land, stop, t + hs)
        att = self.step_fn(f, t, hs, t_new, y, k1)
        y1 = att.y1
        iters = iters + active.long()
        finite = torch.isfinite(y1).all(-1)
        if att.failed is not None:
            finite = finite & ~att.failed
        if ctrl is not None:
            eest = attempt_error(att, y, y1, self.reltol, self.abstol, opts.internalnorm)
            if opts.shared_steps:
                eest = shared_error(eest, active)
            finite = finite & torch.isfinite(eest)
            ok = active & finite & (eest <= 1.0)
            rejected = active & ~ok
            h, cstate = controlled_step(ctrl, tuple(cstate), ok, rejected, finite, eest, h, h_used, h_try, land,
                                        att.newton_iters)
            if opts.shared_steps:
                h = shared_step(h, active)
            streak = torch.where(rejected & ~finite, streak + 1, torch.where(ok, 0, streak))
            small = rejected & (h < dt_floor(t, dtmin))
            unstable = rejected & ~finite & (small | (streak >= _MAX_NONFINITE_STREAK))
        else:
            ok = active & finite
            rejected = active & ~ok
            small = unstable = rejected
        finished = ok & land & (si >= n_stops - 1)
        out_of_iters = active & ~finished & (iters >= maxiters)
        code = torch.where(out_of_iters, ReturnCode.MaxIters, retcode)
        code = torch.where(small, ReturnCode.DtLessThanMin, code)
        code = torch.where(unstable, ReturnCode.Unstable, code)
        # Persistent failure to form the step (a singular matrix) is a convergence failure.
        retcode = code if att.failed is None else torch.where(unstable & att.failed, ReturnCode.ConvergenceFailure,
                                                                code)
        done = done | finished | small | unstable | out_of_iters
        naccept = naccept + ok.long()
        nreject = nreject + rejected.long()

        okc = ok[:, None]
        y_next = torch.where(okc, y1, y)
        t_end = torch.where(ok, t_new, t)
        f1 = att.f1 if att.f1 is not None else f(y_next, t_end)
        k1_next = torch.where(okc, f1, k1)
        record = (t, torch.where(ok, hs, torch.zeros_like(hs)), t_end, y, ok)
        state = (t_end, y_next, k1_next, h, done, retcode, iters, naccept, nreject, streak,
                 si + (ok & land).long(), hmax, stops, dtmin, maxiters, *cstate)
        return state, record

    @contextlib.contextmanager
    def _plain_forward_pass(self):
        """While the eager loop runs its forward pass outside any torch.func transform, an implicit
        step may take ``∂f/∂t`` by core dual numbers (the recomputation runs under vmap: not there)."""
        if not self.implicit:
            yield
            return
        self.stepper.jacobian.dual_time_derivative = True
        try:
            yield
        finally:
            self.stepper.jacobian.dual_time_derivative = False

    def run_chunk(self, state: tuple) -> Tuple[tuple, tuple]:
        records = []
        for _ in range(self.chunk):
            state, record = self.iteration(state)
            records.append(record)
        return state, tuple(torch.stack(column) for column in zip(*records))

    def forward(self) -> Tuple[tuple, _Records]:
        compiled_run = None
        if self.compiled and self.kind() in _EAGER_KINDS:
            self.compiled, self.chunk = False, 1
        if scalar_control_applies(self):
            with self._plain_forward_pass():
                state, columns = scalar_forward(self)
            return state, _moving(_Records(*columns))
        if self.compiled:
            # Compiled once per kind of solve and reused by later solves of that kind (dynamo guards
            # on the values it read, not on this object). The wrapper itself is made once too:
            # making it copies inductor's configuration (~1 ms).
            compiled_run = _compiled_run_chunk(self.kind(), self.loop.dev.type)
        state = self.initial_state()
        chunks = []
        # Where intermediates are stack-allocated, the C++ wrapper also returns its outputs in buffers
        # of its own that every later call (of this kind, in this thread) overwrites: what is kept of
        # a call is copied out.
        stack = self.compiled and self.loop.dev.type == "cpu"
        with torch.no_grad(), _stack_allocating_cpp_wrapper() if stack else contextlib.nullcontext():
            while not bool(state[4].all()):     # the one host synchronisation per chunk
                try:
                    if self.compiled:
                        state, rec = compiled_run(self, state, same_variant=bool(chunks))
                    else:
                        state, rec = self.run_chunk(state)
                except _PythonStateChanged as err:
                    self._fall_back_to_eager(err)
                    continue                    # this chunk again, from the same state, eagerly
                except Exception as err:
                    if self.compiled and "RecompileLimit" in type(err).__name__:
                        raise RuntimeError(
                            "compile=True: torch.compile's recompile limit was reached: the fused step loop "
                            "of this f, method and shape has been compiled for as many variants as "
                            "torch._dynamo.config.recompile_limit allows (each new Python number, string or "
                            "object that f reads from its closure or globals is one). Pass such values in p "
                            "or as tensors, raise that limit, or use compile=False") from err
                    if self.compiled and _from_compiler(err):
                        raise RuntimeError(
                            "compile=True: torch.compile could not compile the step loop with this f "
                            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
                            "f must be traceable (no .item(), no Python branches on tensor values, no "
                            "autograd calls inside); use compile=False for this f") from err
                    raise
                chunks.append(tuple(x.clone() for x in rec) if stack else rec)
                self.f.calls += self.chunk * self.evals_per_iteration
                self.iterations += self.chunk
            if stack:
                state = tuple(x.clone() if isinstance(x, torch.Tensor) else x for x in state)
        if not chunks:
            times = torch.zeros(0, self.B, dtype=torch.float64, device=self.loop.dev)     # every member failed at t0
            records = _Records(times, times, times, self.loop.y.new_zeros(0, self.B, self.n),
                               torch.zeros(0, self.B, dtype=torch.bool, device=self.loop.dev))
        else:
            records = _moving(_Records(*(torch.cat(c) for c in zip(*chunks))))
        return state, records

    def _fall_back_to_eager(self, err: _PythonStateChanged) -> None:
        """This solve, and later ones of its kind, on the fused path without torch.compile."""
        _EAGER_KINDS.add(self.kind())
        self.compiled, self.chunk = False, 1       # eager, nothing amortises a longer chunk
        reasons = [line.strip() for line in str(err).splitlines() if re.match(r"\s*-\s*\d+/\d+:", line)]
        warnings.warn(
            "compile=True: f changes Python state that the compiled step loop depends on between its "
            f"evaluations ({reasons[0] if reasons else 'see TORCH_LOGS=recompiles'}), other than an integer "
            "counter, so every compiled call would be recompiled. Solves with this f, method and shape "
            "run the fused loop without torch.compile from now on, at about compile=False's speed. "
            "Integer counters (calls[0] += 1, self.nfe += 1) keep the compiled path; keep other side "
            "effects out of f.", RuntimeWarning, stacklevel=5)

    # ---- outputs, recomputed from the records ---------------------------------------------------
    def step_map(self, y: torch.Tensor, t: torch.Tensor, hs: torch.Tensor, t_end: torch.Tensor):
        """``(y1, K)`` of one recorded iteration (``(B, n)``; zero steps give ``y1 = y``)."""
        f = self.f.uncounted
        att = self.step_fn(f, t, hs, t_end, y, f(y, t))
        f1 = att.f1 if att.f1 is not None else f(att.y1, t_end)
        return att.y1, self.stepper.dense_stages(f, t, hs, y, att, f1)


def fused_integrate(f_user: Callable, u0: torch.Tensor, p, make_stepper: Callable, opts: SolveOptions,
                    batch_shape: torch.Size, compiled: bool = True, chunk: Optional[int] = None) -> RawSolution:
    """``integrate`` on the fused path (see the module docstring); the same :class:`RawSolution`,
    whose ``u`` carries the ``DirectAdjoint`` gradient when autograd is on. ``chunk``: iterations per
    call (default :data:`DEFAULT_CHUNK` compiled, 1 eager, where nothing amortises a longer one)."""
    fl = _FusedLoop(f_user, u0, p, make_stepper, opts, batch_shape, compiled, chunk or _default_chunk(compiled))
    if chunk is None and compiled and fl.work_per_iteration[0]:
        fl.chunk = min(fl.chunk, _NEURAL_ROSENBROCK_CHUNK if _neural(f_user, p) else _ROSENBROCK_CHUNK)
    if chunk is None and compiled and fl.B * fl.n > _COMPILED_OUTPUTS_MAX_ELEMENTS:
        # Arithmetic-bound: a call's overhead is small beside one iteration, and a chunk's iterations
        # past the last step cost whole-batch evaluations (batch 4096 through an MLP: 3 steps in
        # chunks of 8 made 50 evaluations instead of 20).
        fl.chunk = 1
    state, rec = fl.forward()
    t, y_last, _, h, done, retcode, _, naccept, nreject = state[:9]
    ts, u = _Outputs(fl, rec, u0, retcode, y_last).build()
    njac, nlu, nsolve = (fl.iterations * w for w in fl.work_per_iteration)
    return RawSolution(t=ts, u=u, retcode=retcode, t_final=t, dt_final=h, nf=fl.f.calls, njac=njac, nlu=nlu,
                       nsolve=nsolve, naccept=naccept, nreject=nreject, dense=None)


class _Outputs:
    """The saved values as functions of the recorded states: ``Z = (y_{r+1} for every record r,
    the values at the save times)``, recomputed in one batched pass (with a graph when autograd is on)."""

    def __init__(self, fl: _FusedLoop, rec: _Records, u0: torch.Tensor, retcode: torch.Tensor, y_last: torch.Tensor):
        self.fl, self.rec, self.retcode, self.y_last = fl, rec, retcode, y_last
        self.u0 = u0.reshape(-1, fl.n)
        self.S = rec.t.shape[0]
        self.dense = fl.loop.dense_coef
        opts = fl.opts
        self.mode = "saveat" if opts.saveat is not None else ("steps" if opts.save_steps else "end")
        self.vmappable = True
        self.rec_padded: Optional[_Records] = None        # made by _padded_records before compiled calls
        # Compiled solves recompute the outputs compiled too, and take the Jacobians the backward
        # pass needs by forward mode there (see _AdjointHook); eager ones by reverse mode.
        self.by_columns = (fl.compiled and fl.n <= _JACOBIAN_MAX_STATES
                           and fl.B * fl.n <= _COMPILED_OUTPUTS_MAX_ELEMENTS)
        if self.mode == "saveat":
            self._locate(opts.saveat.to(device=rec.t.device, dtype=torch.float64))

    def _locate(self, ts: torch.Tensor) -> None:
        """For every save time and member: the record whose accepted step ``(t, t_end]`` holds it."""
        d, rec, B = self.fl.direction, self.rec, self.fl.B
        self.ts = ts
        self.at_start = ts == self.fl.opts.t0                      # (T,): y0 itself, as the reference saves it
        # Rejected records end where they start, at the previous accepted end: keys never decrease.
        # The step's recorded end, not t + hs: a step that lands on tspan's end or a stop is snapped
        # there, and t + hs can fall an ulp short of it, which lost the save time at the end.
        key = (d * rec.t_end).T.contiguous()                        # (B, S)
        query = (d * ts).expand(B, -1).contiguous()                 # (B, T)
        idx = torch.searchsorted(key, query).T                      # (T, B), S where never reached
        self.reached = (idx < self.S) | self.at_start[:, None]
        self.idx = idx.clamp(max=max(self.S - 1, 0))

    def build(self) -> Tuple[torch.Tensor, torch.Tensor]:
        fl, rec, S = self.fl, self.rec, self.S
        single = len(fl.loop.batch_shape) == 0
        y0 = self.u0
        if S == 0:
            Z = y0[:0]
        elif torch.is_grad_enabled() and (y0.requires_grad or self._f_requires_grad()):
            # The first record starts at u0 itself; the others are leaves that only the hook reads.
            self.y_rec = rec.y[1:].detach().requires_grad_(True)
            self.y_in = torch.cat([y0[None], self.y_rec])
            Z = self.recompute_with_graph()
            if Z.requires_grad:
                self.Z = Z
                Z.register_hook(_AdjointHook(self))
        else:
            Z = self.z_without_graph()
        Zy = Z[:S]
        if self.mode == "end":
            ok = self.retcode == ReturnCode.Success
            y_end = Zy[-1] if S else y0
            y_end = torch.where(ok[:, None], y_end, torch.full_like(y_end, float("nan")))
            return torch.tensor([fl.opts.t0, fl.opts.t1], dtype=torch.float64, device=y0.device), \
                torch.stack([y0, y_end])
        if self.mode == "steps":                                  # one member: every accepted step
            ok = rec.ok[:, 0]
            ts = torch.cat([torch.tensor([fl.opts.t0], dtype=torch.float64, device=y0.device), rec.t_end[ok, 0]])
            return ts, torch.cat([y0[None], Zy[ok]])
        if S == 0 and not bool(self.at_start.any()):
            return self.ts[:0], y0.new_zeros(0, *y0.shape)     # nothing saved at all, as the reference
        Zo = Z[S:]
        u = torch.where(self.at_start[:, None, None], y0[None], Zo) if S else y0[None].expand(len(self.ts), -1, -1)
        reached = self.reached
        if single:
            count = int(reached[:, 0].sum())
            return self.ts[:count], u[:count]
        return self.ts, torch.where(reached[:, :, None], u, torch.full_like(u, float("nan")))

    def _f_requires_grad(self) -> bool:
        """Does ``f`` depend on tensors that require grad (in ``p`` or in its closure)?"""
        lp = self.fl.loop
        return self.fl.f.uncounted(lp.y, lp.t).requires_grad

    def _all_steps(self, y: torch.Tensor, t: torch.Tensor, hs: torch.Tensor, t_end: torch.Tensor):
        """``step_map`` over the leading axis of records ``y`` ``(R, B, n)`` (times ``(R, B)``), batched
        by ``vmap``; record by record when ``f`` cannot be vmapped (``.item()``, ``requires_grad_()``
        or autograd calls inside ``f``)."""
        fl = self.fl
        if self.vmappable:
            try:
                return torch.func.vmap(fl.step_map)(y, t, hs, t_end)
            except RuntimeError as err:
                if "vmap" not in str(err) and "functorch" not in str(err):
                    raise
                self.vmappable = False
        steps = [fl.step_map(y[r], t[r], hs[r], t_end[r]) for r in range(y.shape[0])]
        return torch.stack([a for a, _ in steps]), torch.stack([b for _, b in steps])

    def _save_records(self, rec: Optional[_Records] = None):
        """Per save time and member: the record's row and column indices and its times ``(T, B)``."""
        rec, (T, B) = rec or self.rec, self.idx.shape
        cols = torch.arange(B, device=rec.t.device)[None, :].expand(T, B)
        r = self.idx
        return r, cols, rec.t[r, cols], rec.hs[r, cols], rec.t_end[r, cols]

    def _live(self, hs_r: torch.Tensor, rows=slice(None)) -> torch.Tensor:
        """``(T, B)``: the save times (numbered ``rows``) that lie in a step taken, after ``t0``."""
        return self.reached[rows] & ~self.at_start[rows, None] & (hs_r != 0)

    def _interpolate(self, y_r, y1_r, K_r, t_r, hs_r, te_r, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The values at the save times (those numbered ``rows``, default all) from their records' start,
        end and stages."""
        rows = slice(None) if rows is None else rows
        tj = self.ts[rows, None].expand_as(t_r)
        live = self._live(hs_r, rows)
        theta = torch.where(live, (tj - t_r) / torch.where(live, hs_r, torch.ones_like(hs_r)), torch.zeros_like(hs_r))
        value = interpolate(self.dense, theta, y_r, hs_r, K_r)
        return torch.where((tj == te_r)[:, :, None], y1_r, value)   # landed exactly

    def z(self, y: torch.Tensor, traced: bool = False) -> torch.Tensor:
        """``Z(y)`` for record start states ``y`` ``(S, B, n)``: ``(S [+ T], B, n)``, every step recomputed
        (the graph the gradient runs through). ``traced``: for torch.compile, vmap without fallback."""
        rec = self.rec_padded if traced else self.rec
        steps = torch.func.vmap(self.fl.step_map) if traced else self._all_steps
        y1, K = steps(y, rec.t, rec.hs, rec.t_end)
        if self.mode != "saveat":
            return y1
        r, cols, t_r, hs_r, te_r = self._save_records(rec)
        return torch.cat([y1, self._interpolate(y[r, cols], y1[r, cols], K[r, cols], t_r, hs_r, te_r)])

    def z_traced(self, y: torch.Tensor) -> torch.Tensor:
        """:meth:`z` as compiled (with its backward pass, by AOTAutograd), on the padded records."""
        return self.z(y, traced=True)

    def _padded_records(self) -> _Records:
        """The records' times padded to :func:`_padded_count` records by zero steps at the end, made
        once, outside compiled code (a ``functools.cached_property`` would take its lock inside the
        traced function, which dynamo refuses on Python 3.11, and every compiled recomputation
        would fall back to eager)."""
        if self.rec_padded is None:
            rec = self.rec
            last = rec.t_end[-1:].expand(_padded_count(self.S) - self.S, -1)
            self.rec_padded = _Records(torch.cat([rec.t, last]), torch.cat([rec.hs, torch.zeros_like(last)]),
                                       torch.cat([rec.t_end, last]), None, None)
        return self.rec_padded

    def _pad(self, y: torch.Tensor) -> torch.Tensor:
        """Record starts ``y`` ``(S, B, n)`` padded like :attr:`rec_padded`, from the last record's start
        (the padding's rows are removed from the results unread)."""
        return torch.cat([y, y[-1:].detach().expand(_padded_count(self.S) - self.S, -1, -1)])

    def _unpad(self, Z: torch.Tensor) -> torch.Tensor:
        """``Z`` (or columns of its Jacobian, records in dimension -3) without the padding's rows."""
        S, end = self.S, _padded_count(self.S)
        return torch.cat([Z[..., :S, :, :], Z[..., end:, :, :]], dim=-3)

    def z_columns(self, y: torch.Tensor) -> torch.Tensor:
        """``∂Z/∂y`` applied to ``e_i`` in every record, ``i = 1 … n``: ``(n, S [+ T], B, n)``. Every row
        of ``Z`` depends on one record's start only, so these are the columns of each row's Jacobian
        with respect to its record: ``J_r`` for the steps, and that of each save time's value."""
        n = y.shape[-1]
        basis = torch.eye(n, dtype=y.dtype, device=y.device)[:, None, None, :].expand(n, *y.shape)
        return torch.func.vmap(lambda v: torch.func.jvp(self.z_traced, (y,), (v,))[1])(basis)

    def run_compiled(self, name: str, y: torch.Tensor) -> torch.Tensor:
        """``self.<name>(y)`` on the padded records, compiled once per kind of solve, output mode and
        padded record count (static shapes: torch 2.13's forward mode fails on symbolic ones), with
        the padding's rows removed. Raises :class:`_NotCompiled` if this kind's ``name`` could not be
        compiled (now or before)."""
        fl = self.fl
        key = self._kind()
        if (name,) + key in _NOT_COMPILED:
            raise _NotCompiled
        options = _CPU_OUTPUT_OPTIONS if fl.loop.dev.type == "cpu" else {}
        self._padded_records()
        try:
            return self._unpad(_compiled(getattr(_Outputs, name), key, options, False)(self, self._pad(y)))
        except Exception as err:
            if not _from_compiler(err):
                raise
            _NOT_COMPILED.add((name,) + key)
            raise _NotCompiled from err

    def _kind(self) -> tuple:
        """What the compiled outputs' functions are compiled for: the loop's kind of solve, the output
        mode, the number of save times and the padded record count."""
        return self.fl.kind() + (self.mode, None if self.mode != "saveat" else self.ts.shape[0],
                                 _padded_count(self.S))

    def recompute_with_graph(self) -> torch.Tensor:
        """``Z(y_in)`` with its graph: compiled where it can be (an ``f`` that runs in the compiled loop
        may still defeat ``vmap`` over the records) and, for Rosenbrock methods, once the eager form
        has cost what compiling costs (:data:`_OUTPUTS_COMPILE_BUDGET_S`); else eager."""
        if self.by_columns and self.fl.implicit:
            key = self._kind()
            spent = _EAGER_OUTPUT_SECONDS.get(key, 0.0)
            if spent < _OUTPUTS_COMPILE_BUDGET_S:
                self.by_columns = False
                start = time.perf_counter()
                Z = self.z(self.y_in)
                _EAGER_OUTPUT_SECONDS[key] = spent + (1.0 + _EAGER_BACKWARD_FACTOR) * (time.perf_counter() - start)
                return Z
        if self.by_columns:
            try:
                return self.run_compiled("z_traced", self.y_in)
            except _NotCompiled:
                self.by_columns = False
        return self.z(self.y_in)

    def jacobians_by_columns(self, Go: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(A, d)`` of the adjoint recursion from :meth:`z_columns`: ``A[r, b] = J_r``, and ``d`` the
        save-time cotangents ``Go`` pulled back to their records' starts."""
        S, (T, B) = self.S, Go.shape[:2]
        with torch.no_grad():
            cols = self.run_compiled("z_columns", self.y_in.detach())      # may raise _NotCompiled
        A = cols[:, :S].permute(1, 2, 3, 0)                          # A[r, b, k, i] = (J_r e_i)_k
        d = Go.new_zeros(S, B, self.fl.n)
        if T:
            pulled = torch.einsum("itbk,tbk->tbi", cols[:, S:], Go)  # (J_jᵀ Go_j) for each save time j
            members = torch.arange(B, device=Go.device)[None, :].expand(T, B)
            d.index_put_((self.idx, members), pulled, accumulate=True)
        return A, d

    def z_without_graph(self) -> torch.Tensor:
        """The values of ``Z`` when nothing is differentiated: the states after each record are the
        next record's start, and only the steps that hold a save time are recomputed."""
        rec = self.rec
        Zy = torch.cat([rec.y[1:], self.y_last[None]])
        if self.mode != "saveat":
            return Zy
        if self.S <= self.idx.shape[0]:
            # fewer steps than save times (several save times per step): recompute every step once
            with torch.no_grad():
                return self.z(rec.y)
        r, cols, t_r, hs_r, te_r = self._save_records()
        # A save time that a step landed on (tspan's end, a stop) is that step's end state, already
        # recorded: only the save times inside a step need the step's stages again.
        values = Zy[r, cols]
        inside = (self._live(hs_r) & (self.ts[:, None] != te_r)).any(1)
        rows = torch.nonzero(inside).squeeze(1)
        if rows.numel():
            r, cols, t_r, hs_r, te_r = (x[rows] for x in (r, cols, t_r, hs_r, te_r))
            y_r = rec.y[r, cols]
            y1_r, K_r = self._all_steps(y_r, t_r, hs_r, te_r)
            values = values.index_copy(0, rows, self._interpolate(y_r, y1_r, K_r, t_r, hs_r, te_r, rows))
        return torch.cat([Zy, values])


#: the parallel scan of the adjoint recursion is used while its work, ``S log2(S) B n³`` multiply-adds,
#: stays below this; past it the sequential recursion's ``S B n²`` wins despite its ``S`` small ops
_SCAN_MAX_WORK = 2 ** 24


def _adjoint_recursion(Gy: torch.Tensor, A: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``λ_r = Gy_r + λ_{r+1} A_{r+1} + d_{r+1}`` for ``r = S-1 … 0`` (``λ_{S-1} = Gy_{S-1}``), all
    ``(S, B, n)`` with ``A`` ``(S, B, n, n)`` acting on row vectors.

    Sequentially this is ``S`` rounds of small ops, which for a tiny state cost far more in dispatch
    than in arithmetic. As a Hillis-Steele scan of the affine maps ``λ ↦ λ P + c`` it takes
    ``⌈log2 S⌉`` rounds of batched products instead. Entry ``r`` starts as ``λ_r = λ_{r+1} P_r + c_r``;
    each round composes it with the entry ``span`` records later, doubling ``span``, so that after
    the last round every entry is expressed through records past the end, which contribute nothing
    (the chain's ``P`` contains the last record's zero) and ``λ_r = c_r``. Same products, summed in
    a different order: the results agree to round-off."""
    S, B, n = Gy.shape
    if S <= 1:
        return Gy.clone()
    rounds = (S - 1).bit_length()
    if S * rounds * B * n ** 3 > _SCAN_MAX_WORK:
        lam_next = torch.empty_like(Gy)
        g = torch.zeros_like(Gy[0])
        for r in range(S - 1, -1, -1):
            lam = Gy[r] + g
            lam_next[r] = lam
            g = torch.baddbmm(d[r].unsqueeze(1), lam.unsqueeze(1), A[r]).squeeze(1)
        return lam_next
    # entry r: λ_r = λ_{r+1} P_r + c_r, with the last entry already exact (P = 0)
    P = torch.cat([A[1:], torch.zeros_like(A[:1])])
    c = torch.cat([Gy[:-1] + d[1:], Gy[-1:]])
    step = 1
    while step < S:
        # compose with the map of entry r + step: λ_{r+step} = λ_{r+2 step} P' + c'
        P_far, c_far = P[step:], c[step:]
        c = torch.cat([torch.baddbmm(c[:-step].reshape(-1, 1, n), c_far.reshape(-1, 1, n),
                                     P[:-step].reshape(-1, n, n)).reshape(S - step, B, n), c[-step:]])
        P = torch.cat([torch.matmul(P_far, P[:-step]), P[-step:]])
        step *= 2
    return c


class _AdjointHook:
    """Replaces the cotangent of ``Z``'s step part by the adjoint ``λ_{r+1}`` of the whole solve."""

    def __init__(self, out: _Outputs):
        self.out = out
        self.inner = False      # set while the hook's own products run through Z

    def __call__(self, G: torch.Tensor) -> Optional[torch.Tensor]:
        if self.inner or G is None:
            return None
        out = self.out
        fl, rec, S = out.fl, out.rec, out.S
        n = fl.n
        G = G.detach()
        Gy, Go = G[:S], G[S:]

        Z, y_in = out.Z, out.y_in

        def vjp(cotangents: torch.Tensor, batched: bool) -> torch.Tensor:
            # Products with the graph the forward built (its buffers are still alive: this hook runs
            # before the backward pass enters it), so nothing is recomputed.
            self.inner = True
            try:
                if batched and out.vmappable:
                    try:
                        return torch.autograd.grad(Z, y_in, cotangents, retain_graph=True, is_grads_batched=True)[0]
                    except RuntimeError as err:
                        if "vmap" not in str(err) and "functorch" not in str(err) and "batch" not in str(err):
                            raise
                if batched:
                    return torch.stack([torch.autograd.grad(Z, y_in, c, retain_graph=True)[0] for c in cotangents])
                return torch.autograd.grad(Z, y_in, cotangents, retain_graph=True)[0]
            finally:
                self.inner = False

        A = None
        if out.by_columns:
            try:
                A, d = out.jacobians_by_columns(Go)
            except _NotCompiled:
                # No forward mode through f: reverse mode, on an eager graph of Z (a compiled
                # backward pass runs once only, and the parameters' pass still needs it).
                with torch.enable_grad():
                    y_in = out.y_in.detach().requires_grad_(True)
                    Z = out.z(y_in)
        if A is not None:
            lam_next = _adjoint_recursion(Gy, A, d)
        elif n <= _JACOBIAN_MAX_STATES:
            # n unit cotangents on every record's y_{r+1} give the rows of all J_r at once; one more
            # (the save-time cotangents alone) gives d_r.
            cot = G.new_zeros((n + 1,) + tuple(G.shape))
            for i in range(n):
                cot[i, :S, :, i] = 1.0
            cot[n, S:] = Go
            rows = vjp(cot, True)                                    # (n + 1, S, B, n)
            A, d = rows[:n].permute(1, 2, 0, 3), rows[n]              # A[r, b, i, :] = J_rᵀ e_i
            lam_next = _adjoint_recursion(Gy, A, d)
        else:
            d = vjp(torch.cat([torch.zeros_like(Gy), Go]), False)
            y = rec.y
            lam_next = torch.empty_like(Gy)
            g = torch.zeros_like(Gy[0])
            for r in range(S - 1, -1, -1):
                lam = Gy[r] + g
                lam_next[r] = lam
                with torch.enable_grad():
                    yr = y[r].detach().requires_grad_(True)
                    y1 = fl.step_map(yr, rec.t[r], rec.hs[r], rec.t_end[r])[0]
                    g = torch.autograd.grad(y1, yr, lam)[0] + d[r]
        return torch.cat([lam_next, Go])
