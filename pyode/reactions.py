"""Mass-action reaction libraries: every candidate elementary reaction, its log rate constant a weight.

A :class:`ReactionLibrary` is a chemical reaction neural network (Ji & Deng 2021) whose stoichiometry
is enumerated instead of learned: all elementary reactions among ``n`` species up to a molecularity
that conserve a weighted count (total mass, or molecules), each with rate
``r_j = k_j Π_i u_i^{a_ji}`` and ``du/dt = Σ_j (b_j - a_j) r_j``. Only the ``ln k_j`` are fitted
(:func:`pyode.estimation.fit_rate_constants`), so every parameter value is a physically valid
mechanism: concentrations stay non-negative, the weighted count is conserved exactly, and the rates
of a stiff mechanism (Robertson's span 0.04 … 3·10⁷) are plain numbers in log space. Reactions are
then removed by significance, and what remains is read as a mechanism (:meth:`equations`).
"""
from __future__ import annotations

import itertools
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["ReactionLibrary", "candidate_reactions", "mass_action_rates"]

Complex = Tuple[int, ...]


def _complexes(n: int, max_order: int) -> List[Complex]:
    """All multisets of 1 … ``max_order`` species, as stoichiometric count vectors."""
    out = []
    for order in range(1, max_order + 1):
        for combo in itertools.combinations_with_replacement(range(n), order):
            out.append(tuple(combo.count(i) for i in range(n)))
    return out


def candidate_reactions(n: int, *, max_order: int = 2, weights: Optional[Sequence[float]] = None
                        ) -> List[Tuple[Complex, Complex]]:
    """Every reaction ``reactants -> products`` between distinct complexes of 1 … ``max_order``
    species whose weighted count ``Σ w_i c_i`` is equal on both sides.

    Arguments:
        n: number of species.
        max_order: largest number of molecules on either side (2: elementary bimolecular chemistry).
        weights: conserved weight per species (molar masses, or element counts); default all ones,
            which conserves the number of molecules.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    if isinstance(max_order, bool) or not isinstance(max_order, int) or not 1 <= max_order <= 3:
        raise ValueError(f"max_order must be 1, 2 or 3; got {max_order!r}")
    w = [1.0] * n if weights is None else [float(x) for x in weights]
    if len(w) != n or not all(math.isfinite(x) and x > 0 for x in w):
        raise ValueError(f"weights must be {n} positive numbers (one per species); got {weights!r}")
    cx = _complexes(n, max_order)
    mass = [sum(wi * ci for wi, ci in zip(w, c)) for c in cx]
    return [(a, b) for a, ma in zip(cx, mass) for b, mb in zip(cx, mass)
            if a != b and abs(ma - mb) <= 1e-9 * max(ma, mb)]


def mass_action_rates(u: torch.Tensor, log_k: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """``r_j = exp(ln k_j + Σ_i a_ji ln u_i)`` for ``u`` of shape ``(..., n)``, ``log_k`` of shape
    ``(..., R)`` and reaction orders ``(R, n)``; leading dimensions broadcast, so each batch member
    may carry its own constants.

    Concentrations below ``sqrt(tiny)`` of the dtype (zero, or a solver's undershoot within its
    tolerance) count as that floor: the rate then vanishes to working precision while its
    derivative stays exact (``∂(k u)/∂u = k`` at ``u = 0``), which a stiff solver's Jacobian needs.
    """
    log_u = torch.log(_floored(u))
    return torch.exp(log_k + log_u @ orders.T)


def _floored(u: torch.Tensor) -> torch.Tensor:
    """``u`` with concentrations below ``sqrt(tiny)`` of its dtype raised to it."""
    return u.clamp_min(math.sqrt(torch.finfo(u.dtype).tiny))


class ReactionLibrary(nn.Module):
    """``du/dt = Σ_j (b_j - a_j) k_j Π_i u_i^{a_ji}`` over a library of candidate reactions.

    Arguments:
        n_species: number of species ``n``.
        names: species names for :meth:`equations` (default ``u1 … un``).
        max_order, weights: which reactions are candidates (:func:`candidate_reactions`).
        reactions: an explicit list of ``(reactant counts, product counts)`` instead.
        log_k: initial ``ln k`` (a number or one per reaction; default 0).

    ``log_k`` is the one parameter; the buffer ``active`` marks reactions still in the model
    (:meth:`remove` takes reactions out; their ``ln k`` is kept but unused). The module accepts
    ``log_k`` of shape ``(..., R)`` through :meth:`rhs`, so a batch of parameter sets can be solved
    as one batched problem (finite-difference Jacobians in one solve).
    """

    def __init__(self, n_species: int, *, names: Optional[Sequence[str]] = None, max_order: int = 2,
                 weights: Optional[Sequence[float]] = None,
                 reactions: Optional[Sequence[Tuple[Sequence[int], Sequence[int]]]] = None,
                 log_k: float = 0.0, dtype: torch.dtype = torch.float64):
        super().__init__()
        if reactions is None:
            reactions = candidate_reactions(n_species, max_order=max_order, weights=weights)
        reactions = [(tuple(int(x) for x in a), tuple(int(x) for x in b)) for a, b in reactions]
        for a, b in reactions:
            if len(a) != n_species or len(b) != n_species or min(a + b) < 0:
                raise ValueError(f"each reaction must be two lists of {n_species} non-negative counts; got {a} -> {b}")
        if not reactions:
            raise ValueError("the library has no reactions; raise max_order or check weights")
        self.names = [f"u{i + 1}" for i in range(n_species)] if names is None else [str(s) for s in names]
        if len(self.names) != n_species:
            raise ValueError(f"names must have {n_species} entries; got {len(self.names)}")
        self.n = n_species
        self.reactions = reactions
        A = torch.tensor([a for a, _ in reactions], dtype=dtype)
        B = torch.tensor([b for _, b in reactions], dtype=dtype)
        self.register_buffer("orders", A)
        self.register_buffer("stoichiometry", B - A)
        self.register_buffer("active", torch.ones(len(reactions), dtype=torch.bool))
        self.log_k = nn.Parameter(torch.as_tensor(log_k, dtype=dtype).expand(len(reactions)).clone())

    @property
    def n_reactions(self) -> int:
        return len(self.reactions)

    def rates(self, u: torch.Tensor, log_k: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Rates of progress ``(..., R)`` with the given ``ln k`` (default the module's); removed
        reactions have rate zero."""
        lk = self.log_k if log_k is None else log_k
        lk = torch.where(self.active, lk.to(u.dtype), torch.full((), -math.inf, dtype=u.dtype, device=u.device))
        return mass_action_rates(u, lk, self.orders.to(u.dtype))

    def rhs(self, u: torch.Tensor, log_k: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``du/dt`` with the given ``ln k`` (default the module's)."""
        return self.rates(u, log_k) @ self.stoichiometry.to(u.dtype)

    def forward(self, u: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.rhs(u)

    def jacobian(self, u: torch.Tensor, log_k: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``∂(du/dt)/∂u``, shape ``(..., n, n)``: ``Σ_j ν_j r_j a_jk / u_k`` (``u_k`` at its floor, see
        :func:`mass_action_rates`, which makes it exact for first-order terms at ``u_k = 0``)."""
        weighted = self.rates(u, log_k)[..., :, None] * self.orders.to(u.dtype)
        return (self.stoichiometry.to(u.dtype).T @ weighted) / _floored(u)[..., None, :]

    def remove(self, which: torch.Tensor) -> None:
        """Take the reactions where ``which`` is True out of the model."""
        which = torch.as_tensor(which, dtype=torch.bool, device=self.active.device)
        if which.shape != self.active.shape:
            raise ValueError(f"which must have shape ({self.n_reactions},); got {tuple(which.shape)}")
        self.active &= ~which

    def _side(self, counts: Complex) -> str:
        parts = []
        for name, c in zip(self.names, counts):
            if c:
                parts.append(name if c == 1 else f"{c}{name}")
        return " + ".join(parts)

    def equation(self, j: int) -> str:
        """Reaction ``j`` as text, e.g. ``"2B -> B + C"``."""
        return self.format(self.reactions[j])

    def format(self, reaction: Tuple[Sequence[int], Sequence[int]]) -> str:
        """A ``(reactant counts, product counts)`` pair as text with this library's species names."""
        a, b = reaction
        return f"{self._side(a)} -> {self._side(b)}"

    def equations(self) -> List[Tuple[str, float]]:
        """The active reactions, in library order, each with its rate constant ``k``."""
        k = self.log_k.detach().exp().tolist()
        return [(self.equation(j), k[j]) for j in range(self.n_reactions) if bool(self.active[j])]
