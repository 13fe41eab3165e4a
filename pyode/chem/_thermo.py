"""NASA 7-coefficient polynomials (two temperature ranges), as Cantera's ``NasaPoly2``."""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Nasa7", "ThermoState", "temperature_basis", "temperature_basis_derivative"]


class ThermoState(NamedTuple):
    """Dimensionless properties of every species at one temperature per batch member, ``(..., K)``."""
    cp_R: torch.Tensor        # c_p / R
    h_RT: torch.Tensor        # h / (R T)
    g_RT: torch.Tensor        # g / (R T) = h/RT - s/R
    dcp_R: torch.Tensor       # d(c_p / R) / dT, 1/K


def _property_rows(a: torch.Tensor) -> torch.Tensor:
    """``(7, 4, K)``: the coefficients of ``c_p/R``, ``h/RT``, ``g/RT`` and ``d(c_p/R)/dT`` on the basis
    ``(1, T, T², T³, T⁴, 1/T, ln T)``, from ``a`` ``(K, 7)``."""
    z = torch.zeros_like(a[:, 0])
    cp = [a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], z, z]
    h = [a[:, 0], a[:, 1] / 2, a[:, 2] / 3, a[:, 3] / 4, a[:, 4] / 5, a[:, 5], z]
    s = [a[:, 6], a[:, 1], a[:, 2] / 2, a[:, 3] / 3, a[:, 4] / 4, z, a[:, 0]]
    g = [hi - si for hi, si in zip(h, s)]
    dcp = [a[:, 1], 2 * a[:, 2], 3 * a[:, 3], 4 * a[:, 4], z, z, z]
    return torch.stack([torch.stack(rows, 0) for rows in (cp, h, g, dcp)], 1)


_POWERS = (0.0, 1.0, 2.0, 3.0, 4.0, -1.0)


_POWER_TENSORS: dict = {}


def _powers(T: torch.Tensor) -> torch.Tensor:
    key = (T.dtype, T.device)
    if key not in _POWER_TENSORS:
        _POWER_TENSORS[key] = torch.tensor(_POWERS, dtype=T.dtype, device=T.device)
    return _POWER_TENSORS[key]


def temperature_basis(T: torch.Tensor) -> torch.Tensor:
    """``(1, T, T², T³, T⁴, 1/T, ln T)`` per member, ``(..., 7)``: the basis of the NASA polynomials
    (and of ``ln k = ln A + b ln T - Ea/(RT)``)."""
    powers = _powers(T)
    t = T[..., None]
    return torch.cat([t ** powers, torch.log(t)], -1)


def temperature_basis_derivative(T: torch.Tensor) -> torch.Tensor:
    """``d/dT`` of :func:`temperature_basis`: ``(0, 1, 2T, 3T², 4T³, -1/T², 1/T)``."""
    t = T[..., None]
    powers = _powers(T)
    return torch.cat([powers * t ** (powers - 1), 1 / t], -1)


class Nasa7(torch.nn.Module):
    """Dimensionless standard-state properties of every species at temperatures ``T``.

    ``coeffs`` ``(K, 15)``: Cantera's ``[T_mid, a_high(7), a_low(7)]`` per species; the low range
    applies for ``T <= T_mid``. :meth:`evaluate` gives every property in one matrix product over the
    basis ``(1, T, T², T³, T⁴, 1/T, ln T)`` (a handful of tensor operations for all species).
    """

    def __init__(self, coeffs: torch.Tensor):
        super().__init__()
        self.register_buffer("t_mid", coeffs[:, 0].clone())
        self.register_buffer("high", coeffs[:, 1:8].clone())
        self.register_buffer("low", coeffs[:, 8:15].clone())
        K = coeffs.shape[0]
        rows = torch.stack([_property_rows(coeffs[:, 8:15]), _property_rows(coeffs[:, 1:8])], 1)  # (7, 2, 4, K)
        self.register_buffer("_rows", rows.reshape(7, 8 * K))
        # one switch temperature for every species (the common case): a per-member choice of range
        mid = coeffs[:, 0]
        self._one_mid = float(mid[0]) if bool((mid == mid[0]).all()) else None

    def evaluate(self, T: torch.Tensor, basis: torch.Tensor = None) -> ThermoState:
        """``c_p/R``, ``h/RT``, ``g/RT`` and ``d(c_p/R)/dT`` of every species, ``(..., K)`` each;
        ``basis`` is :func:`temperature_basis` of ``T`` when the caller has it."""
        K = self.t_mid.shape[0]
        if basis is None:
            basis = temperature_basis(T)
        both = (basis @ self._rows).unflatten(-1, (2, 4, K))                   # (..., range, property, K)
        if self._one_mid is not None:
            low = (T <= self._one_mid)[..., None, None]
        else:
            low = (T[..., None] <= self.t_mid)[..., None, :]
        props = torch.where(low, both[..., 0, :, :], both[..., 1, :, :])
        return ThermoState(*props.unbind(-2))

    def cp_R(self, T: torch.Tensor) -> torch.Tensor:
        return self.evaluate(T).cp_R

    def h_RT(self, T: torch.Tensor) -> torch.Tensor:
        return self.evaluate(T).h_RT

    def s_R(self, T: torch.Tensor) -> torch.Tensor:
        state = self.evaluate(T)
        return state.h_RT - state.g_RT

    def g_RT(self, T: torch.Tensor) -> torch.Tensor:
        """Standard Gibbs energy over RT, ``h/RT - s/R``."""
        return self.evaluate(T).g_RT
