"""The julia engine: ``solve(prob, alg, ..., backend="julia")``.

Python validates (``pyode.solve`` did), translates the algorithm, controller and sensitivity
algorithm through the tables, picks the route of the right-hand side, and hands arrays to
``PyodeBridge.solve_batch``. Gradients: a ``torch.autograd.Function`` whose forward runs the
solves under ``Zygote.pullback`` (with the mapped SciMLSensitivity algorithm) and whose backward
calls those pullbacks; the parameter gradient arrives as one flat vector and flows back to the
user's tensors through the ``torch.cat`` that built it.

What is sent (see ``julia/PyodeBridge.jl``, ``solve_batch``): solver keywords without ``dense``
(SciMLSensitivity reads saved values from the forward solution's interpolant, which ``dense=false``
makes linear) and without ``saveat``, which travels on its own: an undifferentiated solve keeps
every step and interpolates at it, a differentiated one passes it to SciMLSensitivity and matches
the rows back by time. ``sol(t)`` after a differentiated solve solves again at ``t``.

Routes of ``f`` (fastest first):
1. :class:`~pyode.julia.JuliaFunction` (Julia source, optionally calling translated networks);
2. a :class:`pyode.nn.NeuralODE` over an ``nn.Sequential``: the network is translated to Julia;
3. any other Python callable ``f(u, p, t)``, called back from Julia with its vector-Jacobian
   products, Jacobian and time derivative from torch (slow: every evaluation crosses into Python).
"""
from __future__ import annotations

import weakref
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from .._params import parameter_leaves
from .._retcode import ReturnCode
from ..algorithms import AutoSwitch
from ..sensealg import (AbstractSensitivityAlgorithm, BacksolveAdjoint, DirectAdjoint, ForwardSensitivity, GaussAdjoint,
                        InterpolatingAdjoint)
from . import _runtime
from ._functions import JuliaFunction, ode_function, sequential_of
from ._tables import UnsupportedOnJulia, julia_algorithm, julia_controller, julia_sensealg, retcode_from_julia

__all__ = ["solve_julia"]

_EVALUATED: Dict[str, Any] = {}
_NETWORK_FUNCTIONS: "weakref.WeakKeyDictionary[nn.Module, JuliaFunction]" = weakref.WeakKeyDictionary()


def _evaluate(bridge, source: str):
    """A Julia value for source (constructors are evaluated once per session)."""
    if source not in _EVALUATED:
        _EVALUATED[source] = bridge.evaluate(source)
    return _EVALUATED[source]


def solve_julia(prob, alg, *, saveat, reltol, abstol, dt, adaptive, maxiters, dtmin, dtmax, tstops, controller,
                progress, dense, sensealg: AbstractSensitivityAlgorithm, sensealg_is_default: bool, single: bool):
    """Solve on the julia engine; returns the engine-neutral record that ``pyode.solve`` wraps."""
    u0 = prob.u0
    if u0.device.type != "cpu":
        raise ValueError(f"u0 is on {u0.device}; the julia engine runs on the CPU: pass u0.cpu() (and CPU "
                         "parameters), or use backend='native' for CUDA")
    if any(leaf is not None and leaf.requires_grad for leaf in prob.time_leaves) or \
            (isinstance(saveat, torch.Tensor) and saveat.requires_grad):
        raise ValueError("gradients with respect to tspan or saveat are not available on the julia engine; "
                         "pass plain numbers, or use backend='native'")
    n = u0.shape[-1]
    batch = int(torch.Size(prob.batch_shape).numel())
    u0_flat = u0.reshape(batch, n)
    t0, t1 = prob.tspan

    # Everything the tables can refuse is refused before Julia starts (a first start takes minutes).
    network = None if isinstance(prob.f, JuliaFunction) else sequential_of(prob)
    python_rhs = not isinstance(prob.f, JuliaFunction) and network is None
    alg_src = julia_algorithm(alg, finite_differences=python_rhs)
    if python_rhs and sensealg_is_default:
        sensealg = GaussAdjoint()       # the default DirectAdjoint cannot trace through Python
    if python_rhs and not _differentiable(prob):
        sense_src, seminorm = "nothing", False      # no gradient asked for: any sensealg will do
    else:
        sense_src, seminorm = julia_sensealg(sensealg, python_rhs=python_rhs)
    ctrl = julia_controller(controller, alg)

    wants_gradient = _wants_gradient(prob)
    if wants_gradient:
        _check_tolerances_for_adjoint(sensealg, reltol, abstol)

    bridge = _runtime.bridge()
    route = _route(prob, network)
    alg_jl = _evaluate(bridge, alg_src)
    sense_jl = _evaluate(bridge, sense_src)

    # Solver keywords only: `saveat` travels on its own and `dense` never reaches Julia (see
    # PyodeBridge.solve_batch: SciMLSensitivity reads saved values from the forward solution's
    # interpolant, which dense=false makes linear; dense=true with saveat misaligns the stages).
    kw: Dict[str, Any] = dict(reltol=_tol(reltol), abstol=_tol(abstol), maxiters=int(maxiters))
    if dt is not None:
        kw["dt"] = float(dt)
    if not adaptive:
        kw["adaptive"] = False
    for name, v in (("dtmin", dtmin), ("dtmax", dtmax)):
        if v is not None:
            kw[name] = float(v)
    if tstops is not None:
        kw["tstops"] = tstops.numpy()
    if progress:
        kw["progress"] = True
    if ctrl is not None:
        kw["controller"] = _evaluate(bridge, ctrl)
    if seminorm:
        kw["internalnorm"] = bridge.Seminorm(n)
    opts = bridge.options(**kw)

    if saveat is not None:
        times = saveat.numpy()
    elif not single:
        times = np.array([t0, t1])     # a batch saves t0 and t1, as the native engine
    else:
        times = None                   # every step

    theta = route.theta
    needs_grad = torch.is_grad_enabled() and (u0.requires_grad or theta.requires_grad)
    run = _Run(bridge, route.function, u0_flat, theta, (t0, t1), alg_jl, opts, sense_jl, batch, n,
               saveat=times, keep_dense=bool(dense) and not needs_grad,
               count_switches=needs_grad and _saves_only_at_saveat(alg, sensealg) and times is not None)
    if needs_grad:
        run.inputs = (u0_flat, theta)
        u = _JuliaSolve.apply(run, u0_flat, theta)
    else:
        u = run.forward(differentiate=False)
    return run.record(u.to(u0.dtype), saveat, single, dense=bool(dense))


def _wants_gradient(prob) -> bool:
    """Whether the solve will be differentiated, known before Julia starts (``u0``, ``p`` or the
    networks of a Julia right-hand side require grad)."""
    if not torch.is_grad_enabled():
        return False
    if prob.u0.requires_grad or parameter_leaves(prob.p)[1]:
        return True
    return isinstance(prob.f, JuliaFunction) and any(q.requires_grad for q in prob.f.parameters())


def _check_tolerances_for_adjoint(sensealg, reltol, abstol) -> None:
    """Per-component tolerances cannot go with InterpolatingAdjoint or BacksolveAdjoint in Julia.

    SciMLSensitivity hands the solve's ``abstol``/``reltol`` on to the adjoint solve, whose state
    is ``[λ; ∫λᵀ∂f/∂p]`` (n + P entries, InterpolatingAdjoint) or ``[λ; ∫...; u]`` (2n + P,
    BacksolveAdjoint), and DiffEqBase's residuals broadcast an n-vector over it unchecked.
    GaussAdjoint and QuadratureAdjoint integrate λ alone (n entries) and are not affected.
    """
    if not isinstance(sensealg, (InterpolatingAdjoint, BacksolveAdjoint)):
        return
    for name, v in (("reltol", reltol), ("abstol", abstol)):
        if isinstance(v, torch.Tensor) and v.numel() > 1:
            raise UnsupportedOnJulia(
                f"{name} with one entry per component ({v.numel()} entries) cannot be used with "
                f"sensealg={sensealg!r} on the julia engine: SciMLSensitivity passes it on to the adjoint solve, "
                "whose state has n + P (InterpolatingAdjoint) or 2n + P (BacksolveAdjoint) entries. Pass a single "
                f"number for {name}, use GaussAdjoint() or QuadratureAdjoint() (adjoint state of n entries), "
                "or use backend='native'")


def _saves_only_at_saveat(alg, sensealg) -> bool:
    """Whether a differentiated solve keeps only the ``saveat`` points of a composite (AutoSwitch)
    algorithm, so that its ``alg_choice`` misses the switches between saves: BacksolveAdjoint and
    the checkpointed adjoints solve the forward problem with ``saveat``, DirectAdjoint
    (ReverseDiffAdjoint) and ForwardSensitivity (ForwardDiffSensitivity) are plain solves with it.
    The other adjoints solve it without ``saveat`` and keep every step."""
    if not isinstance(alg, AutoSwitch):
        return False
    if isinstance(sensealg, (BacksolveAdjoint, DirectAdjoint, ForwardSensitivity)):
        return True
    return isinstance(sensealg, (InterpolatingAdjoint, GaussAdjoint)) and sensealg.checkpointing


def _differentiable(prob) -> bool:
    """Whether the solve will be differentiated (gradients enabled and something requires grad)."""
    return torch.is_grad_enabled() and (prob.u0.requires_grad or bool(parameter_leaves(prob.p)[1]))


class _Route(SimpleNamespace):
    kind: str           # "julia" or "python"
    function: Any       # the Julia ODEFunction
    theta: torch.Tensor


def _route(prob, net: Optional[nn.Module]) -> _Route:
    """The route of ``prob.f``; ``net`` is its translatable NeuralODE network, if any."""
    bridge = _runtime.bridge()
    f = prob.f
    if not isinstance(f, JuliaFunction):
        if net is not None:                         # a NeuralODE over a translatable network
            if net not in _NETWORK_FUNCTIONS:
                _NETWORK_FUNCTIONS[net] = ode_function(net)
            jf = _NETWORK_FUNCTIONS[net]
            return _Route(kind="julia", function=_compiled(bridge, jf, 0), theta=jf.theta(None))
        return _python_route(prob, bridge)
    theta = f.theta(prob.p)
    n_user = theta.numel() - sum(tr.n_params for tr in f.networks.values())
    return _Route(kind="julia", function=_compiled(bridge, f, n_user), theta=theta)


def _compiled(bridge, jf: JuliaFunction, n_user: int):
    if n_user not in jf._compiled:
        source = jf.julia_source(n_user)
        try:
            g = bridge.evaluate(source)
        except Exception as err:
            raise ValueError(f"the Julia source of {jf!r} does not evaluate in Julia:\n{err}\n"
                             f"Composed source:\n{source}") from err
        jf._compiled[n_user] = bridge.julia_function(g)
    return jf._compiled[n_user]


def _python_route(prob, bridge) -> _Route:
    """Route 3: ``f`` stays in Python; Julia calls back for values and torch derivatives."""
    paths, leaves, _ = parameter_leaves(prob.p)
    dtype = prob.u0.dtype
    f, p = prob.f, prob.p

    def as_tensor(x) -> torch.Tensor:
        # A copy: Julia may reuse the buffer after the call returns.
        return torch.tensor(np.asarray(x), dtype=dtype)

    def time(t) -> torch.Tensor:
        return torch.tensor(float(t), dtype=dtype)

    def value(u, t):
        with torch.no_grad():
            return _numpy(f(as_tensor(u), p, time(t)))

    def vjp(u, t, lam):
        uu = as_tensor(u).requires_grad_(True)
        with torch.enable_grad():
            out = f(uu, p, time(t))
            grads = torch.autograd.grad(out, [uu, *leaves], as_tensor(lam).to(out.dtype), allow_unused=True)
        gu = grads[0] if grads[0] is not None else torch.zeros_like(uu)
        gp = [torch.zeros(leaf.numel(), dtype=torch.float64) if g is None else g.reshape(-1).to(torch.float64)
              for g, leaf in zip(grads[1:], leaves)]
        # Without parameters a differentiated solve sends one placeholder entry (see _Run).
        return _numpy(gu), (torch.cat(gp).numpy() if gp else np.zeros(1))

    def jac(u, t):
        uu = as_tensor(u)
        with torch.enable_grad():
            J = torch.autograd.functional.jacobian(lambda x: f(x, p, time(t)), uu)
        return _numpy(J)

    def tgrad(u, t):
        uu = as_tensor(u)
        with torch.enable_grad():
            d = torch.autograd.functional.jacobian(lambda s: f(uu, p, s), time(t))
        return _numpy(d.reshape(-1))

    theta = (torch.cat([leaf.reshape(-1).to(torch.float64) for leaf in leaves]) if leaves
             else torch.zeros(0, dtype=torch.float64))
    return _Route(kind="python", function=bridge.python_function(value, vjp, jac, tgrad), theta=theta)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to(torch.float64).cpu().numpy())


def _tol(v):
    return v.numpy() if isinstance(v, torch.Tensor) else float(v)


class _Run:
    """One julia-engine solve of a batch: what is sent to ``PyodeBridge.solve_batch`` and the
    result (with its pullbacks) that comes back.

    A differentiated solve without parameters sends one placeholder entry of θ (ignored by every
    right-hand side: user source and networks read their own slices of θ): SciMLSensitivity's
    ForwardDiffSensitivity splits θ into chunks of ``length(θ)`` entries and divides by it when θ
    is empty. Its gradient is dropped on the way back.
    """

    def __init__(self, bridge, function, u0, theta, tspan, alg, opts, sensealg, batch, n, *, saveat,
                 keep_dense: bool, count_switches: bool):
        self.bridge, self.function = bridge, function
        # (B, n) C-ordered is n × B column-major: Julia reads it through the transpose without a copy.
        self.u0 = np.ascontiguousarray(u0.detach().to(torch.float64).cpu().numpy())
        self.n_theta = theta.numel()
        self.theta = np.ascontiguousarray(theta.detach().to(torch.float64).cpu().numpy())
        self.tspan, self.alg, self.opts, self.sensealg = tspan, alg, opts, sensealg
        self.batch, self.n, self.dtype = batch, n, u0.dtype
        self.saveat = None if saveat is None else np.ascontiguousarray(saveat, dtype=np.float64)
        self.keep_dense, self.count_switches = keep_dense, count_switches
        self.differentiated = False
        self.inputs = None          # (u0, θ) tensors of a differentiated solve, for sol(t)
        self.result = None

    def at_times(self, times: np.ndarray) -> "_Run":
        """The same solve, saving at ``times`` (strictly monotone in the direction of time)."""
        child = _Run(self.bridge, self.function, torch.from_numpy(self.u0),
                     torch.from_numpy(self.theta[:self.n_theta]), self.tspan, self.alg, self.opts, self.sensealg,
                     self.batch, self.n, saveat=times, keep_dense=False, count_switches=False)
        child.dtype = self.dtype
        return child

    def forward(self, differentiate: bool) -> torch.Tensor:
        t0, t1 = self.tspan
        theta = self.theta
        if differentiate and self.n_theta == 0:
            theta = np.zeros(1)
        self.differentiated = differentiate
        self.result = self.bridge.solve_batch(self.function, self.u0.T, theta, float(t0), float(t1), self.alg,
                                              self.opts, self.sensealg, differentiate, self.saveat,
                                              self.keep_dense and not differentiate,
                                              self.count_switches and differentiate)
        u = np.asarray(self.result.u)                       # n × T × B, Julia memory (no copy)
        return torch.from_numpy(np.ascontiguousarray(u.transpose(1, 2, 0)))     # (T, B, n)

    def backward(self, grad_u: torch.Tensor):
        codes = self.codes()
        failed = [i for i, c in enumerate(codes) if not c.successful]
        if failed:
            raise RuntimeError(f"cannot differentiate: batch member(s) {failed[:5]} failed "
                               f"({', '.join(codes[i].name for i in failed[:5])}); their gradient is undefined. "
                               "Fix the failures (see sol.retcode) or drop those members")
        g = np.ascontiguousarray(torch.nan_to_num(grad_u.detach().to(torch.float64)).permute(1, 0, 2).cpu().numpy())
        du0, dtheta = self.bridge.backward(self.result, g.transpose())     # (B, T, n) C = n × T × B
        du0 = torch.from_numpy(np.ascontiguousarray(np.asarray(du0).T)).to(self.dtype)
        dth = (torch.zeros(self.n_theta, dtype=torch.float64) if dtheta is None
               else torch.from_numpy(np.array(np.asarray(dtheta), dtype=np.float64)[:self.n_theta]))
        return du0, dth

    def codes(self) -> List[ReturnCode]:
        return [retcode_from_julia(str(c)) for c in self.result.retcode]

    def record(self, u: torch.Tensor, saveat, single: bool, dense: bool) -> SimpleNamespace:
        res = self.result
        ts = torch.from_numpy(np.array(np.asarray(res.t), dtype=np.float64))     # Tmax × B
        if self.saveat is not None:
            _check_rows(ts, self.saveat)
        if saveat is not None:
            t = saveat.clone()
        elif single:
            t = ts[:, 0].clone()
        else:
            t = torch.tensor(self.tspan, dtype=torch.float64)
        stats = np.array(np.asarray(res.stats), dtype=np.int64)             # 7 × B
        codes = torch.tensor([int(c) for c in self.codes()], dtype=torch.long)
        return SimpleNamespace(
            t=t, u=u, retcode=codes, nf=int(stats[0].sum()), njac=int(stats[1].sum()), nlu=int(stats[2].sum()),
            nsolve=int(stats[3].sum()), naccept=torch.from_numpy(stats[4].copy()),
            nreject=torch.from_numpy(stats[5].copy()), nswitch=torch.from_numpy(stats[6].copy()),
            t_final=torch.from_numpy(np.array(np.asarray(res.t_final), dtype=np.float64)),
            dt_final=torch.from_numpy(np.array(np.asarray(res.dt_final), dtype=np.float64)),
            dense=_JuliaDense(self) if dense else None)


def _check_rows(ts: torch.Tensor, wanted: np.ndarray) -> None:
    """The rows Julia returned are the requested times, in order (NaN where a member stopped
    before one): anything else would label states with the wrong times."""
    want = torch.from_numpy(np.asarray(wanted, dtype=np.float64))
    if ts.shape[0] != want.shape[0]:
        raise RuntimeError(f"the Julia side returned {ts.shape[0]} saved rows for {want.shape[0]} requested times; "
                           "this is a bug in pyode's julia engine (PyodeBridge.solve_batch), please report it")
    got = ts.T                                                              # B × T
    bad = ~torch.isnan(got) & (got != want)
    if bool(bad.any()):
        b, j = (int(i) for i in torch.nonzero(bad)[0])
        raise RuntimeError(f"the Julia side returned member {b}'s row {j} at t={float(got[b, j])!r}, not at the requested "
                           f"t={float(want[j])!r}; this is a bug in pyode's julia engine (PyodeBridge.solve_batch), "
                           "please report it")


class _JuliaDense:
    """``sol(t)`` on the julia engine.

    An undifferentiated solve keeps Julia's solutions with every step: their own interpolants.
    After a differentiated solve (whose solutions SciMLSensitivity makes refuse interpolation) the
    problem is solved again saving at the requested times, differentiated with the same sensealg
    when gradients are enabled: ``sol(t)`` is then differentiable like ``sol.u``.
    """

    def __init__(self, run: _Run):
        self.run = run

    def __call__(self, tq: torch.Tensor) -> torch.Tensor:
        run = self.run
        if not run.differentiated:
            out = np.asarray(run.bridge.interpolate(run.result, tq.cpu().numpy()))    # n × Q × B
            return torch.from_numpy(np.ascontiguousarray(out.transpose(1, 2, 0))).to(run.dtype)
        t0, t1 = run.tspan
        uniq, inverse = torch.unique(tq.detach().to(torch.float64).cpu(), return_inverse=True)   # ascending
        if t1 < t0:
            uniq, inverse = uniq.flip(0), uniq.numel() - 1 - inverse
        child = run.at_times(uniq.numpy())
        u0, theta = run.inputs
        if torch.is_grad_enabled() and (u0.requires_grad or theta.requires_grad):
            u = _JuliaSolve.apply(child, u0, theta)
        else:
            u = child.forward(differentiate=False)
        return u[inverse].to(run.dtype)


class _JuliaSolve(torch.autograd.Function):
    """Saved states of a julia-engine solve, with a backward pass that calls SciMLSensitivity."""

    @staticmethod
    def forward(ctx, run: _Run, u0: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        ctx.run = run
        return run.forward(differentiate=True)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_u: torch.Tensor):
        du0, dtheta = ctx.run.backward(grad_u)
        return None, du0, dtheta
