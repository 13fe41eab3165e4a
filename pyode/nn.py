"""Neural and hybrid ODE models as ``torch.nn.Module`` objects.

* :class:`NeuralODE` integrates ``du/dt = model(u)`` (or ``model(u, t)``) from a batch of initial
  states and returns the :class:`~pyode.ODESolution`, as DiffEqFlux's ``NeuralODE``.
* :class:`SpeciesScaling` wraps a network so that species of very different magnitudes are
  learned alike (Kim et al. 2021, "Stiff neural ordinary differential equations"), optionally with
  its inputs clamped to the training data's range.
* :class:`UDE` is a universal differential equation: known physics with trainable physical
  parameters plus a network correction (Rackauckas et al. 2020).
* :class:`MassActionNetwork` is a chemical reaction neural network (Ji & Deng 2021): one hidden
  layer whose units are reactions with mass-action rates, ``du/dt = S exp(W ln u + ln k)``.
* :class:`PolynomialNetwork` is a polynomial (π-) network of scaled species, ``f = yscale · (C φ(u/yscale))``
  with ``φ`` the monomials up to a degree (Fronk & Petzold 2023): mass-action kinetics are
  polynomials, and the layer is linear in ``C``, so it can be warm-started by least squares on
  estimated derivatives (collocation) before training through the solver.
* :class:`CompartmentalNetwork` is a network in compartmental form: non-negative rates of transfer
  between species, so mass is conserved and no species driven negative (a hybrid's correction).
* :class:`Conserving` projects a right-hand side onto the null space of given linear invariants
  (total mass, element balances), :class:`Sum` adds right-hand sides (a model plus a correction).
* :func:`mlp` builds the plain multilayer perceptrons these wrap.
* :class:`CNF` is a continuous normalizing flow (FFJORD): ``log_prob`` and ``sample`` with an exact or
  Hutchinson trace and RNODE's regularisers; :class:`ODEBlock` is a continuous-depth residual
  block (ODE-Net); :class:`LatentODE` is an encoder (RNN or ODE-RNN), a latent ODE and a decoder
  trained by the ELBO on irregularly sampled sequences.

The models are right-hand sides of the form ``model(u)`` / ``model(u, t)`` with ``u`` of shape
``(*batch, n)`` and ``t`` of shape ``u.shape[:-1]``; the module is handed to :func:`pyode.solve` as the
problem's ``p``, so every sensealg finds its parameters.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ._model_jacobian import model_jacobian, supports, zero_time_derivative
from ._problem import ODEProblem
from ._solution import ODESolution
from ._solve import _KEYWORDS, solve
from ._cnf import CNF  # noqa: E402,F401  (re-exported: pyode.nn.CNF)
from ._odeblock import ODEBlock  # noqa: E402,F401  (re-exported: pyode.nn.ODEBlock)
from ._latent_ode import LatentODE  # noqa: E402,F401  (re-exported: pyode.nn.LatentODE)

__all__ = ["NeuralODE", "SpeciesScaling", "UDE", "MassActionNetwork", "PolynomialNetwork", "Conserving",
           "CompartmentalNetwork", "Sum", "mlp",
           "CNF", "ODEBlock", "LatentODE"]

_ACTIVATIONS = {"gelu": nn.GELU, "tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus, "silu": nn.SiLU,
                "elu": nn.ELU, "sigmoid": nn.Sigmoid}


def mlp(n_in: int, n_out: int, *, width: int = 32, depth: int = 2, activation: Union[str, Callable[[], nn.Module]] = "gelu",
        dtype: torch.dtype = torch.float64, zero_last: bool = False) -> nn.Sequential:
    """A multilayer perceptron ``n_in → width → … → width → n_out`` with ``depth`` hidden layers.

    Arguments:
        n_in, n_out: input and output sizes.
        width, depth: hidden layer size and number of hidden layers (Kim et al. use 6 GELU layers of
            5 units for Robertson).
        activation: ``"gelu"`` (default; rectified networks train stiff systems better than
            saturating ones), ``"tanh"``, ``"relu"``, ``"softplus"``, ``"silu"``, ``"elu"``,
            ``"sigmoid"`` or a module class.
        dtype: parameter dtype (float64 by default, as stiff solves need).
        zero_last: initialise the last layer to zero, so that the network starts as no correction
            (useful in a :class:`UDE`).

    Raises:
        ValueError: for non-positive sizes or an unknown activation name.
    """
    for name, v in (("n_in", n_in), ("n_out", n_out), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer (hidden layers); got {depth!r}")
    if isinstance(activation, str):
        if activation.lower() not in _ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is unknown; choose one of {sorted(_ACTIVATIONS)} "
                             "or pass a module class such as torch.nn.GELU")
        activation = _ACTIVATIONS[activation.lower()]
    layers = []
    size = n_in
    for _ in range(depth):
        layers += [nn.Linear(size, width), activation()]
        size = width
    layers.append(nn.Linear(size, n_out))
    net = nn.Sequential(*layers).to(dtype)
    if zero_last:
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)
    return net


def _as_vector(name: str, value: Any, n: Optional[int] = None) -> torch.Tensor:
    v = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value, dtype=torch.float64)
    v = v.reshape(-1) if v.ndim == 0 else v
    if v.ndim != 1 or (n is not None and v.numel() not in (1, n)):
        raise ValueError(f"{name} must be a number or one value per species ({n}); got shape {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()) or not bool((v > 0).all()):
        raise ValueError(f"{name} must be positive and finite; got {v.tolist()}")
    return v


class SpeciesScaling(nn.Module):
    """``f(u) = net(u / yscale) · yscale / tscale``: a network seen through per-species scales.

    Kim et al. (2021) found that stiff kinetics (species from 1e-5 to 1) are learnable when the
    network sees and produces scaled species: inputs divided by ``yscale`` (per-species maximum, or
    range), outputs multiplied by ``yscale / tscale`` (``tscale`` the time span), so that a network
    output of order one is a change of order one of the species over the whole span.

    Arguments:
        net: the network, ``(*, n) → (*, n)`` (or ``(u, t)`` with ``time_dependent``).
        yscale: per-species scale, shape ``(n,)`` or a number; positive.
        tscale: time scale (a positive number), e.g. ``t1 - t0``.
        scale_input: divide the input by ``yscale`` (default True).
        time_dependent: call ``net(u, t)`` with ``t`` of shape ``u.shape[:-1]`` (scaled by ``tscale``).
        output_scale: per-species output scale (a number or ``(n,)``, positive) used instead of
            ``yscale / tscale``: for a correction to known kinetics, the size of the rates it corrects.
        input_range: ``(low, high)``, each a number or ``(n,)``: the network's (scaled) inputs are
            clamped to this box, usually the training data's range (:meth:`data_range`). Outside
            it the network holds its boundary value instead of extrapolating, which a stiff solve
            can turn into a blow-up; the Jacobian there has no component across the boundary.
    """

    def __init__(self, net: nn.Module, yscale: Any, tscale: float = 1.0, *, scale_input: bool = True,
                 time_dependent: bool = False, output_scale: Any = None, input_range: Any = None):
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be a module or callable; got {type(net).__name__}")
        self.net = net
        ys = _as_vector("yscale", yscale)
        ts = _as_vector("tscale", tscale)
        if ts.numel() != 1:
            raise ValueError(f"tscale must be a single positive number (a time scale); got {ts.tolist()}")
        ts = float(ts[0])
        self.register_buffer("yscale", ys)
        self.tscale = ts
        self.scale_input, self.time_dependent = scale_input, time_dependent
        # buffers only when given, so that checkpoints of models without them keep loading
        self.register_buffer("output_scale", None if output_scale is None else _as_vector("output_scale", output_scale))
        self.register_buffer("low", None)
        self.register_buffer("high", None)
        if input_range is not None:
            self.low, self.high = _input_range(input_range)

    @staticmethod
    def data_range(u: torch.Tensor, yscale: Any, scale_input: bool = True):
        """``(low, high)``: the per-species range of the states ``u`` (``(..., n)``) as the network
        sees them (divided by ``yscale`` unless ``scale_input`` is off), for ``input_range``."""
        x = torch.as_tensor(u, dtype=torch.float64).detach().reshape(-1, u.shape[-1])
        if scale_input:
            x = x / _as_vector("yscale", yscale)
        return x.min(0).values, x.max(0).values

    def scaled_input(self, u: torch.Tensor) -> torch.Tensor:
        """What the network sees of ``u``: divided by ``yscale``, clamped to ``input_range``."""
        return _network_input(u, self.yscale if self.scale_input else None, self.low, self.high)

    @property
    def out_scale(self) -> torch.Tensor:
        """The factor on the network's output: ``output_scale``, else ``yscale / tscale``."""
        return self.yscale / self.tscale if self.output_scale is None else self.output_scale

    def forward(self, u: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.scaled_input(u)
        if self.time_dependent:
            out = self.net(x, (t / self.tscale).to(u.dtype))
        else:
            out = self.net(x)
        return out * self.out_scale.to(out.dtype)


def _network_input(u: torch.Tensor, yscale: Optional[torch.Tensor], low: Optional[torch.Tensor],
                   high: Optional[torch.Tensor]) -> torch.Tensor:
    """``u / yscale`` (``yscale`` None: ``u``), clamped to ``[low, high]`` when a range is set."""
    x = u if yscale is None else u / yscale.to(u.dtype)
    return x if low is None else torch.clamp(x, low.to(x.dtype), high.to(x.dtype))


def _input_range(value: Any):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"input_range must be a pair (low, high) of numbers or per-species vectors; got {value!r}")
    low, high = (torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else v, dtype=torch.float64).reshape(-1)
                 for v in value)
    if not (bool(torch.isfinite(low).all()) and bool(torch.isfinite(high).all())):
        raise ValueError(f"input_range must be finite; got low {low.tolist()}, high {high.tolist()}")
    if low.numel() != high.numel() and 1 not in (low.numel(), high.numel()):
        raise ValueError(f"input_range's low and high must have the same length; got {low.numel()} and {high.numel()}")
    if not bool((low <= high).all()):
        raise ValueError(f"input_range needs low <= high for every species; got low {low.tolist()}, "
                         f"high {high.tolist()}")
    return low, high


class MassActionNetwork(nn.Module):
    """A chemical reaction neural network (Ji & Deng 2021): ``R`` reactions with mass-action rates.

    ``du/dt = S r``, ``r_j = exp(ln k_j + Σ_i ν_ji ln u_i)``: the hidden layer's units are
    reactions, its weights ``ν ≥ 0`` reaction orders, its biases ``ln k`` log rate constants, and the
    output layer ``S`` (``n × R``) the stoichiometry. Rates spanning many orders of magnitude — the
    stiffness of kinetics — come from the exponential, not from large weights, which is what lets
    such networks learn stiff mechanisms such as Robertson's from a few dozen observations.

    Arguments:
        n_species: number of species ``n``.
        n_reactions: number of reactions ``R``.
        conserve: optional ``(m, n)`` matrix of conserved linear combinations (e.g. ``ones(1, n)``
            for total mass): ``S`` is projected onto their null space, so ``C du/dt = 0`` exactly.
        floor: concentrations below it count as ``floor`` in ``ln u`` (species start at zero).
        log_k_init: initial log rate constants (a number or ``R`` values).
        seed_generator: optional ``torch.Generator`` for the random initial orders and stoichiometry.
    """

    def __init__(self, n_species: int, n_reactions: int, *, conserve: Optional[Any] = None, floor: float = 1e-30,
                 log_k_init: Any = 0.0, dtype: torch.dtype = torch.float64,
                 seed_generator: Optional[torch.Generator] = None):
        super().__init__()
        for name, v in (("n_species", n_species), ("n_reactions", n_reactions)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if not floor > 0:
            raise ValueError(f"floor must be positive; got {floor!r}")
        g = seed_generator
        # orders through softplus: non-negative, smooth at zero
        self.order_raw = nn.Parameter(torch.randn(n_reactions, n_species, generator=g, dtype=dtype) * 0.5 - 1.0)
        self.stoich = nn.Parameter(torch.randn(n_species, n_reactions, generator=g, dtype=dtype) * 0.5)
        log_k = torch.as_tensor(log_k_init, dtype=dtype).expand(n_reactions).clone()
        self.log_k = nn.Parameter(log_k)
        self.log_floor = math.log(floor)
        if conserve is not None:
            C = torch.as_tensor(conserve, dtype=dtype)
            if C.ndim != 2 or C.shape[1] != n_species:
                raise ValueError(f"conserve must have shape (m, {n_species}); got {tuple(C.shape)}")
            # projector onto the null space of C
            proj = torch.eye(n_species, dtype=dtype) - C.T @ torch.linalg.pinv(C @ C.T) @ C
        else:
            proj = None
        self.register_buffer("projector", proj)

    @property
    def orders(self) -> torch.Tensor:
        return nn.functional.softplus(self.order_raw)

    @property
    def stoichiometry(self) -> torch.Tensor:
        return self.stoich if self.projector is None else self.projector @ self.stoich

    def rates(self, u: torch.Tensor) -> torch.Tensor:
        log_u = torch.log(u.clamp(min=math.exp(self.log_floor)))
        return torch.exp(log_u @ self.orders.T.to(u.dtype) + self.log_k.to(u.dtype))

    def forward(self, u: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.rates(u) @ self.stoichiometry.T.to(u.dtype)


class PolynomialNetwork(nn.Module):
    """``f(u) = yscale ⊙ (C φ(u / yscale))``: all monomials of the scaled species up to ``degree``.

    ``φ(x) = (1, x_1, …, x_n, x_1², x_1 x_2, …)`` (``math.comb(n + degree, degree)`` features);
    ``C`` has shape ``(n, n_features)``. Mass-action kinetics with elementary reactions are
    polynomials of degree 2 in the species (Robertson, POLLU), so this layer can represent them
    exactly; since it is linear in ``C``, :meth:`fit_least_squares` sets ``C`` from estimated
    derivatives in one linear solve.

    Arguments:
        n: number of species.
        degree: highest total degree (default 2).
        yscale: per-species scale (positive; shape ``(n,)`` or a number).
    """

    def __init__(self, n: int, degree: int = 2, *, yscale: Any = 1.0, dtype: torch.dtype = torch.float64):
        super().__init__()
        for name, v in (("n", n), ("degree", degree)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        import itertools

        self.n, self.degree = n, degree
        self.monomials = [m for d in range(degree + 1) for m in itertools.combinations_with_replacement(range(n), d)]
        self.register_buffer("yscale", _as_vector("yscale", yscale, n).to(dtype).expand(n).clone())
        self.coefficients = nn.Parameter(torch.zeros(n, len(self.monomials), dtype=dtype))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``φ(x)``, shape ``(*x.shape[:-1], n_features)``."""
        one = torch.ones_like(x[..., :1])
        cols = [one[..., 0]]
        for m in self.monomials[1:]:
            term = x[..., m[0]]
            for i in m[1:]:
                term = term * x[..., i]
            cols.append(term)
        return torch.stack(cols, -1)

    def forward(self, u: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        ys = self.yscale.to(u.dtype)
        return (self.features(u / ys) @ self.coefficients.T.to(u.dtype)) * ys

    @torch.no_grad()
    def fit_least_squares(self, u: torch.Tensor, dudt: torch.Tensor, weights: Optional[torch.Tensor] = None,
                          rcond: float = 1e-12, target: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
                          ) -> torch.Tensor:
        """Set ``C`` to the least-squares solution of ``w_k (f(u_k) + r(u_k)) ≈ w_k du/dt_k``.

        Arguments:
            u: states ``(K, n)``; dudt: derivative estimates ``(K, n)`` (e.g. from
                :func:`pyode.data.estimate_derivatives`).
            weights: per-row weights ``(K,)`` — for log-spaced times use ``t``, which fits
                ``du/d ln t`` and gives every decade the same say.
            rcond: singular values below ``rcond`` times the largest are cut (minimum-norm
                solution: features are collinear when the data conserve a linear invariant).
            target: optional ``r(u)``: a fixed part of the right-hand side that the polynomial
                complements (``dudt - r(u)`` is fitted).

        Returns:
            The weighted root-mean-square residual per species, ``(n,)``, in scaled units.
        """
        if u.ndim != 2 or u.shape[-1] != self.n or dudt.shape != u.shape:
            raise ValueError(f"u and dudt must both have shape (K, {self.n}); got {tuple(u.shape)} and "
                             f"{tuple(dudt.shape)}")
        ys = self.yscale.to(u.dtype)
        rhs = dudt if target is None else dudt - target(u)
        A = self.features(u / ys)
        b = rhs / ys
        if weights is not None:
            w = torch.as_tensor(weights, dtype=u.dtype, device=u.device).reshape(-1, 1)
            A, b = A * w, b * w
        # SVD-based solve: stable when the data lie on a manifold (conservation) and columns collide
        U, S, Vh = torch.linalg.svd(A, full_matrices=False)
        keep = S > rcond * S[0]
        C = Vh[keep].T @ ((U[:, keep].T @ b) / S[keep, None])
        self.coefficients.copy_(C.T.to(self.coefficients.dtype))
        return (A @ C - b).square().mean(0).sqrt()


class CompartmentalNetwork(nn.Module):
    """``du_i/dt = Σ_j (F_ij(u) u_j − F_ji(u) u_i)`` with rates ``F = softplus(net(x)) · rate_scale ≥ 0``.

    A network in compartmental form: every flux leaves a species in proportion to its own amount.
    So the total ``Σ u`` is conserved exactly and no species can turn negative, the two properties
    an unconstrained network correction of stiff kinetics loses where the data say least: on
    Robertson's noisy data, a plain correction projected onto mass conservation drove B (10⁻⁸ at
    late times, under 1 % noise of its peak) negative and the model too stiff to solve on two seeds
    of three; this form learned all three. A mass-action reaction ``2B → B + C`` is the flux
    ``F_CB = k B`` from B to C.

    Arguments:
        net: ``(*, n) → (*, n(n − 1))``, one output per ordered pair ``(i, j)``, ``i ≠ j``, in
            row-major order (:attr:`pairs`): the rate from ``j`` into ``i``.
        yscale: per-species scale of the network's inputs ``x = u / yscale``.
        rate_scale: a number or one per pair: the size of the rates, in 1 / time.
        input_range: ``(low, high)`` as :class:`SpeciesScaling`'s: ``x`` clamped to that box.
    """

    def __init__(self, net: nn.Module, yscale: Any, rate_scale: Any = 1.0, *, input_range: Any = None):
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be a module or callable; got {type(net).__name__}")
        ys = _as_vector("yscale", yscale)
        if ys.numel() < 2:
            raise ValueError("yscale must have one entry per species (at least 2): a compartmental network moves "
                             "amounts between species")
        n = ys.numel()
        self.net, self.n = net, n
        self.pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        self.register_buffer("yscale", ys)
        self.register_buffer("rate_scale", _as_vector("rate_scale", rate_scale, len(self.pairs)))
        self.register_buffer("into", torch.tensor([i for i, _ in self.pairs]))
        self.register_buffer("out_of", torch.tensor([j for _, j in self.pairs]))
        self.register_buffer("low", None)
        self.register_buffer("high", None)
        if input_range is not None:
            self.low, self.high = _input_range(input_range)

    def rates(self, u: torch.Tensor) -> torch.Tensor:
        """``F`` per pair, ``(*, n(n − 1))``, in :attr:`pairs` order."""
        out = self.net(_network_input(u, self.yscale, self.low, self.high))
        if out.shape[-1] != len(self.pairs):
            raise ValueError(f"net returned {out.shape[-1]} outputs; a compartmental network of {self.n} species "
                             f"needs {len(self.pairs)}, one per ordered pair")
        return nn.functional.softplus(out) * self.rate_scale.to(out.dtype)

    def forward(self, u: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        flux = self.rates(u) * u[..., self.out_of]
        return torch.zeros_like(u).index_add(-1, self.into, flux).index_add(-1, self.out_of, -flux)


class Conserving(nn.Module):
    """``P f(u)``: a right-hand side projected so that linear invariants ``M u`` stay constant.

    Arguments:
        model: the right-hand side ``(u[, t]) -> du/dt``, called as ``model(u)`` when no time is
            given (a plain :func:`mlp` works) and ``model(u, t)`` otherwise.
        invariants: ``(m, n)`` matrix ``M`` of conserved linear combinations, e.g. ``ones(1, n)``
            for total mass or an element-balance matrix; ``P = I - Mᵀ(MMᵀ)⁻¹M``.
    """

    def __init__(self, model: Callable, invariants: Any):
        super().__init__()
        M = torch.as_tensor(invariants, dtype=torch.float64)
        if M.ndim != 2 or M.shape[0] == 0:
            raise ValueError(f"invariants must be an (m, n) matrix with m >= 1; got shape {tuple(M.shape)}")
        self.model = model
        self.register_buffer("projector", torch.eye(M.shape[1], dtype=torch.float64) - M.T @ torch.linalg.pinv(M @ M.T) @ M)

    def forward(self, u: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        du = self.model(u) if t is None else self.model(u, t)
        if du.shape[-1] != self.projector.shape[0]:
            raise ValueError(f"the model returned {du.shape[-1]} components; the invariants have "
                             f"{self.projector.shape[0]} columns")
        return du @ self.projector.T.to(du.dtype)


class Sum(nn.Module):
    """``Σ_k model_k(u[, t])``: e.g. a mechanistic or polynomial model plus a network correction.

    Each model is called as ``model(u)`` when no time is given and ``model(u, t)`` otherwise;
    plain functions are called as ``fn(u, t)`` (``t`` possibly None).
    """

    def __init__(self, *models: Callable):
        super().__init__()
        if not models:
            raise ValueError("Sum needs at least one model")
        self.terms = nn.ModuleList([m if isinstance(m, nn.Module) else _Wrapped(m) for m in models])

    def forward(self, u: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        args = (u,) if t is None else (u, t)       # models of u alone (an mlp) work when no time is given
        out = self.terms[0](*args)
        for m in self.terms[1:]:
            out = out + m(*args)
        return out


class _Wrapped(nn.Module):
    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, u, t=None):
        return self.fn(u, t)


class UDE(nn.Module):
    """A universal differential equation: ``du/dt = physics(u, θ, t) + network(u)``.

    Arguments:
        physics: ``physics(u, params, t) -> du/dt`` with ``params`` a dict of named physical
            parameters (0-d or 1-d tensors) and ``t`` of shape ``u.shape[:-1]``.
        parameters: initial values of the physical parameters, ``{name: value}``; they become
            trainable ``nn.Parameter`` objects.
        network: the correction, a module ``(*, n) → (*, n)``, or None for physics alone.
        positive: names of parameters kept positive by training their logarithm (``True``: all).
        fixed: names of parameters held fixed (known physics; stored as buffers).

    ``ude.physical_parameters()`` returns the current values by name.
    """

    def __init__(self, physics: Callable, parameters: Mapping[str, Any], network: Optional[nn.Module] = None, *,
                 positive: Union[bool, Iterable[str]] = True, fixed: Iterable[str] = ()):
        super().__init__()
        if not callable(physics):
            raise TypeError(f"physics must be callable as physics(u, params, t); got {type(physics).__name__}")
        if not isinstance(parameters, Mapping):
            raise TypeError(f"parameters must be a dict {{name: value}}; got {type(parameters).__name__}")
        names = list(parameters)
        pos = set(names) if positive is True else set() if positive is False else set(positive)
        fixed = set(fixed)
        for label, group in (("positive", pos), ("fixed", fixed)):
            unknown = group - set(names)
            if unknown:
                raise ValueError(f"{label} names {sorted(unknown)} are not among the parameters {names}")
        self.physics, self.network = physics, network
        self._names, self._positive = names, pos
        self.raw = nn.ParameterDict()
        for name in names:
            v = torch.as_tensor(parameters[name], dtype=torch.float64).clone()
            if name in pos:
                if not bool((v > 0).all()):
                    raise ValueError(f"parameter {name!r} = {v.tolist()} must be positive (it is trained as its "
                                     "logarithm); pass positive=[...] without it to train it as it is")
                v = v.log()
            if name in fixed:
                self.register_buffer(f"fixed_{name}", v)
            else:
                self.raw[name] = nn.Parameter(v)
        self._fixed = fixed

    def physical_parameters(self) -> Dict[str, torch.Tensor]:
        """The physical parameters by name (positive ones exponentiated)."""
        out = {}
        for name in self._names:
            v = getattr(self, f"fixed_{name}") if name in self._fixed else self.raw[name]
            out[name] = v.exp() if name in self._positive else v
        return out

    def forward(self, u: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        if t is None:
            t = torch.zeros(u.shape[:-1], dtype=torch.float64, device=u.device)
        params = {k: v.to(u.dtype) for k, v in self.physical_parameters().items()}
        du = self.physics(u, params, t)
        if self.network is not None:
            du = du + self.network(u)
        return du


def _model_rhs(u, model, t):
    return model(u)


def _model_rhs_t(u, model, t):
    return model(u, t)


class _ScaledState(nn.Module):
    """``dx/dt = model(x s) / s`` for the scaled state ``x = u / s``; built per solve by
    :class:`NeuralODE` from its ``state_scale`` buffer, holding the user's ``model`` (whose
    parameters are the ones the solve differentiates)."""

    def __init__(self, model: nn.Module, scale: torch.Tensor, time_dependent: bool):
        super().__init__()
        self.model, self.scale, self.time_dependent = model, scale, time_dependent

    def forward(self, x: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        s = self.scale
        u = x * s
        return (self.model(u, t) if self.time_dependent else self.model(u)) / s


def _scaled_rhs(x, scaled, t):
    return scaled(x, t)


def _scaled_jacobian(x, scaled, t):
    # d(model(x s)/s)/dx = diag(1/s) J(x s) diag(s)
    s = scaled.scale
    return model_jacobian(x * s, scaled.model, t) * s / s[:, None]


def _rescaled(sol: ODESolution, s: torch.Tensor) -> ODESolution:
    """The solution of the scaled state, in the model's units (saved states and dense output)."""
    dense = None if sol._dense is None else (lambda tq, d=sol._dense: d(tq) * s)
    return ODESolution(t=sol.t, u=sol.u * s, retcode=sol.retcode, stats=sol.stats, prob=sol.prob, alg=sol.alg,
                       t_final=sol.t_final, dense=dense, batch_shape=sol._batch_shape)


class NeuralODE(nn.Module):
    """``du/dt = model(u)`` (or ``model(u, t)``) integrated from a batch of initial states.

    Arguments:
        model: a module ``(*batch, n) → (*batch, n)``; with ``time_dependent=True`` it is called as
            ``model(u, t)`` with ``t`` of shape ``u.shape[:-1]`` (float64).
        tspan: ``(t0, t1)``.
        alg: the algorithm (default ``Tsit5()``; a stiff one such as ``Rodas5P()`` for stiff models).
        saveat: default save times (a forward call can override them).
        sensealg: how gradients are computed (default ``DirectAdjoint()``).
        time_dependent: see ``model``.
        state_scale: per-species scales ``s`` (shape ``(n,)``, positive): the solver integrates the
            scaled state ``x = u / s`` (``dx/dt = model(x s) / s``), so that ``reltol`` and ``abstol``
            weigh every species alike however small it is (``abstol`` is then in units of ``s``).
            Kim et al.'s species scaling (:class:`SpeciesScaling`) fixes what the network sees;
            this fixes what the error control sees: POLLU's species span 0.3 to 4e-18, and one
            absolute tolerance in ppm either ignores the small ones or forces compensated linear
            solves on every step (measured: 3.7× the time per training epoch). The solution is
            returned in the model's units; ``sol.prob`` is the scaled problem.
        **solve_kwargs: any other keyword of :func:`pyode.solve` (``reltol``, ``abstol``, ``dtmax``,
            ``maxiters``, ``throw``, ...), checked here.

    ``forward(u0, tspan=None, saveat=None)`` returns the :class:`~pyode.ODESolution`; ``sol.u`` has
    shape ``(T, *u0.shape)`` and carries gradients to the model's parameters and ``u0``.
    """

    def __init__(self, model: nn.Module, tspan: Sequence[float], alg=None, *, saveat: Any = None, sensealg=None,
                 time_dependent: bool = False, state_scale: Any = None, **solve_kwargs):
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be a torch.nn.Module (or callable); got {type(model).__name__}")
        bad = [k for k in solve_kwargs if k not in _KEYWORDS or k in ("saveat", "sensealg")]
        if bad:
            raise TypeError(f"NeuralODE got unknown solve keyword(s) {bad}; known: "
                            f"{[k for k in _KEYWORDS if k not in ('saveat', 'sensealg')]}")
        self.model = model
        ODEProblem(_model_rhs, torch.zeros(1), tspan)          # validates tspan now, not at the first call
        self.tspan = tuple(tspan)
        self.alg, self.saveat, self.sensealg = alg, saveat, sensealg
        self.time_dependent = time_dependent
        self.solve_kwargs = solve_kwargs
        self.register_buffer("state_scale", None if state_scale is None else _as_vector("state_scale", state_scale))

    def problem(self, u0: torch.Tensor, tspan: Optional[Sequence[float]] = None) -> ODEProblem:
        """The ODE problem of one call. An autonomous model built from pyode's layers (an :func:`mlp`,
        :class:`SpeciesScaling`, :class:`Conserving`, :class:`Sum`, :class:`MassActionNetwork`) comes
        with its Jacobian carried through the layers and ``∂f/∂t = 0``, which a stiff method forms in
        a third of the time automatic differentiation takes (``pyode._model_jacobian``)."""
        tspan = self.tspan if tspan is None else tspan
        if self.state_scale is not None:
            s = self.state_scale.to(u0)
            if s.numel() not in (1, u0.shape[-1]):
                raise ValueError(f"state_scale has {s.numel()} values; u0 has {u0.shape[-1]} species")
            scaled = _ScaledState(self.model, s.expand(u0.shape[-1]), self.time_dependent)
            if not self.time_dependent and supports(self.model):
                return ODEProblem(_scaled_rhs, u0 / s, tspan, scaled, jac=_scaled_jacobian, tgrad=zero_time_derivative)
            return ODEProblem(_scaled_rhs, u0 / s, tspan, scaled)
        if self.time_dependent:
            return ODEProblem(_model_rhs_t, u0, tspan, self.model)
        if supports(self.model):
            return ODEProblem(_model_rhs, u0, tspan, self.model, jac=model_jacobian, tgrad=zero_time_derivative)
        return ODEProblem(_model_rhs, u0, tspan, self.model)

    def forward(self, u0: torch.Tensor, tspan: Optional[Sequence[float]] = None, saveat: Any = None) -> ODESolution:
        sol = solve(self.problem(u0, tspan), self.alg, saveat=self.saveat if saveat is None else saveat,
                    sensealg=self.sensealg, **self.solve_kwargs)
        return sol if self.state_scale is None else _rescaled(sol, self.state_scale.to(sol.u))
