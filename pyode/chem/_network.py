"""Mass-action reaction networks written as reaction strings, as Catalyst.jl's ``@reaction_network``.

::

    rn = ReactionNetwork('''
        A -> B,            k1
        2B -> B + C,       k2
        B + C -> A + C,    k3
    ''')
    prob = rn.problem(u0, (0.0, 1e5), p)     # an ODEProblem with the analytic Jacobian

One reaction per line (or per ``;``, or one string per list entry): reactants, an arrow, products,
then the rate constant. ``->`` / ``=>`` is irreversible; ``<->`` / ``<=>`` is reversible and takes
two rate constants (forward, reverse). A side may be ``0`` or ``∅`` (a source or a sink); a species
may carry a coefficient (``2B``, ``2 B``). A rate constant is a parameter name (its value comes from
``p``) or a number (fixed). The rate of a reaction is ``k Π_i u_i^{ν_i}`` over its reactants.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ._mechanism import _slots, slot_product

__all__ = ["ReactionNetwork"]

_ARROWS = ("<=>", "<->", "=>", "->")
_TERM = re.compile(r"^(\d+(?:\.\d*)?)?\s*\*?\s*([A-Za-z_][\w()\[\]']*)$")
_NAME = re.compile(r"^[A-Za-z_]\w*$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _side(text: str, line: str) -> Dict[str, float]:
    text = text.strip()
    if text in ("0", "∅", ""):
        return {}
    out: Dict[str, float] = {}
    for term in text.split("+"):
        m = _TERM.match(term.strip())
        if not m:
            raise ValueError(f"cannot read {term.strip()!r} in reaction {line!r}: write a species, optionally "
                             f"with a coefficient (2B or 2 B), terms joined by +")
        coef = float(m.group(1)) if m.group(1) else 1.0
        if coef <= 0:
            raise ValueError(f"the coefficient of {m.group(2)} in reaction {line!r} must be positive")
        out[m.group(2)] = out.get(m.group(2), 0.0) + coef
    return out


class ReactionNetwork:
    """A mass-action network parsed from reaction strings (see the module docstring).

    Arguments:
        reactions: one string (reactions on separate lines or separated by ``;``) or a sequence of strings.
        species: the order of the state's components (default: order of first appearance).

    Attributes: ``species``, ``parameters`` (rate-constant names, the order of ``p``), ``equations``.
    """

    def __init__(self, reactions: Union[str, Sequence[str]], species: Optional[Sequence[str]] = None):
        if isinstance(reactions, str):
            lines = [ln for part in reactions.splitlines() for ln in part.split(";")]
        elif isinstance(reactions, (list, tuple)) and all(isinstance(r, str) for r in reactions):
            lines = list(reactions)
        else:
            raise TypeError(f"reactions must be a string or a list of strings; got {type(reactions).__name__}")
        lines = [ln.split("#")[0].strip() for ln in lines]
        lines = [ln for ln in lines if ln]
        if not lines:
            raise ValueError("reactions is empty; write one reaction per line, e.g. 'A + B -> C, k1'")
        parsed: List[Tuple[Dict[str, float], Dict[str, float], Any]] = []
        seen: List[str] = []
        params: List[str] = []
        self.equations: List[str] = []
        for line in lines:
            equation, *rates = [x.strip() for x in line.split(",")]
            arrow = next((a for a in _ARROWS if a in equation), None)
            if arrow is None:
                raise ValueError(f"reaction {line!r} has no arrow; use -> (irreversible) or <-> (reversible)")
            left, right = equation.split(arrow, 1)
            reac, prod = _side(left, line), _side(right, line)
            reversible = arrow in ("<=>", "<->")
            want = 2 if reversible else 1
            if len(rates) != want or not all(rates):
                raise ValueError(f"reaction {line!r} needs {want} rate constant{'s' if want == 2 else ''} after the "
                                 f"equation ({'forward, reverse' if reversible else 'a name or a number'})")
            for name in list(reac) + list(prod):
                if name not in seen:
                    seen.append(name)
            ks = []
            for r in rates:
                if _NUMBER.match(r):
                    ks.append(float(r))
                elif _NAME.match(r):
                    ks.append(r)
                    if r not in params:
                        params.append(r)
                else:
                    raise ValueError(f"rate constant {r!r} in reaction {line!r} is neither a name nor a number")
            parsed.append((reac, prod, ks[0]))
            self.equations.append(f"{left.strip()} -> {right.strip()}")
            if reversible:
                parsed.append((prod, reac, ks[1]))
                self.equations.append(f"{right.strip()} -> {left.strip()}")
        if species is None:
            species = seen
        else:
            species = list(species)
            missing = [s for s in seen if s not in species]
            if missing:
                raise ValueError(f"species {missing} appear in the reactions but not in species={species}")
        self.species, self.parameters = list(species), params
        n, R = len(self.species), len(parsed)
        index = {s: i for i, s in enumerate(self.species)}
        # reactant slots (padded with index n, a column of ones), as the mechanisms' rates
        self._idx, self._pow = _slots([{index[s]: v for s, v in r.items()} for r, _, _ in parsed], n)
        self._stoich = torch.zeros(n, R, dtype=torch.float64)     # products - reactants
        self._k_param = torch.full((R,), -1, dtype=torch.long)   # parameter index, or -1 for a number
        self._k_fixed = torch.zeros(R, dtype=torch.float64)
        for j, (reac, prod, k) in enumerate(parsed):
            for name, v in reac.items():
                self._stoich[index[name], j] -= v
            for name, v in prod.items():
                self._stoich[index[name], j] += v
            if isinstance(k, str):
                self._k_param[j] = params.index(k)
            else:
                self._k_fixed[j] = k

    @property
    def n_reactions(self) -> int:
        """Irreversible reactions (a reversible one counts twice)."""
        return self._idx.shape[0]

    def __repr__(self) -> str:
        return (f"ReactionNetwork({len(self.species)} species, {self.n_reactions} reactions, "
                f"parameters {self.parameters})")

    # ---- parameters --------------------------------------------------------------------------------
    def parameter_vector(self, p: Any, dtype=torch.float64) -> torch.Tensor:
        """``p`` as a tensor ``(..., len(parameters))``: a tensor passes through (checked), a dict
        ``{name: value}`` is ordered as :attr:`parameters`."""
        if isinstance(p, dict):
            unknown = sorted(set(p) - set(self.parameters))
            missing = [k for k in self.parameters if k not in p]
            if unknown or missing:
                raise ValueError(f"p names {unknown or 'no unknown'} parameters and misses {missing or 'none'}; "
                                 f"the network's parameters are {self.parameters}")
            return torch.stack([torch.as_tensor(p[k], dtype=dtype) for k in self.parameters], -1)
        p = torch.as_tensor(p, dtype=dtype) if not isinstance(p, torch.Tensor) else p
        if p.shape[-1:] != (len(self.parameters),):
            raise ValueError(f"p has shape {tuple(p.shape)}; the network has {len(self.parameters)} parameters "
                             f"{self.parameters} (last axis)")
        return p

    def _k(self, p: torch.Tensor) -> torch.Tensor:
        fixed = self._k_fixed.to(dtype=p.dtype, device=p.device)
        if not self.parameters:
            return fixed
        gathered = p[..., self._k_param.clamp(min=0).to(p.device)]
        return torch.where(self._k_param.to(p.device) >= 0, gathered, fixed)

    # ---- right-hand side ---------------------------------------------------------------------------
    def rates(self, u: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Mass-action rates ``(..., R)``."""
        idx, pw = self._idx.to(u.device), self._pow.to(device=u.device, dtype=u.dtype)
        return self._k(p) * slot_product(u, idx, pw)

    def rhs(self, u: torch.Tensor, p: torch.Tensor, t=None) -> torch.Tensor:
        """``du/dt = S r(u)``, ``f(u, p, t)`` for :class:`~pyode.ODEProblem`."""
        return self.rates(u, p) @ self._stoich.T.to(device=u.device, dtype=u.dtype)

    def jacobian(self, u: torch.Tensor, p: torch.Tensor, t=None) -> torch.Tensor:
        """``∂f/∂u`` ``(..., n, n)``, analytic: ``S ∂r/∂u`` with ``∂r_j/∂u_i = Σ_slots ν k u^(ν-1) Π_others``."""
        n = len(self.species)
        idx, pw = self._idx.to(u.device), self._pow.to(device=u.device, dtype=u.dtype)
        u1 = torch.cat([u, torch.ones_like(u[..., :1])], -1)
        base = u1[..., idx]                                                   # (..., R, S)
        powers = base ** pw
        S = idx.shape[1]
        partial = []
        for s in range(S):
            others = torch.cat([powers[..., :s], powers[..., s + 1:]], -1).prod(-1)
            partial.append(pw[:, s] * base[..., s] ** (pw[:, s] - 1).clamp(min=0) * others)
        partial = torch.stack(partial, -1) * self._k(p)[..., None]            # (..., R, S)
        onehot = torch.nn.functional.one_hot(idx, n + 1)[..., :n].to(u.dtype)  # (R, S, n)
        dr = torch.einsum("...rs,rsn->...rn", partial, onehot)                # (..., R, n)
        return self._stoich.to(device=u.device, dtype=u.dtype) @ dr

    def problem(self, u0: Any, tspan, p: Any):
        """An :class:`~pyode.ODEProblem` of the network with its analytic Jacobian. ``u0`` is a tensor
        ``(..., n)`` in :attr:`species` order or a dict ``{species: value}`` (others 0); ``p`` a
        tensor in :attr:`parameters` order or a dict."""
        from .._problem import ODEProblem

        if isinstance(u0, dict):
            unknown = sorted(set(u0) - set(self.species))
            if unknown:
                raise ValueError(f"u0 names species {unknown} the network does not have ({self.species})")
            u0 = torch.tensor([float(u0.get(s, 0.0)) for s in self.species], dtype=torch.float64)
        p = self.parameter_vector(p)
        return ODEProblem(self.rhs, u0, tspan, p, jac=self.jacobian)
