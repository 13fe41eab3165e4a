"""NASA 7-coefficient polynomials (two temperature ranges), as Cantera's ``NasaPoly2``."""
from __future__ import annotations

import torch

__all__ = ["Nasa7"]


class Nasa7(torch.nn.Module):
    """Dimensionless standard-state properties of every species at temperatures ``T``.

    ``coeffs`` ``(K, 15)``: Cantera's ``[T_mid, a_high(7), a_low(7)]`` per species; the low range
    applies for ``T <= T_mid``.
    """

    def __init__(self, coeffs: torch.Tensor):
        super().__init__()
        self.register_buffer("t_mid", coeffs[:, 0].clone())
        self.register_buffer("high", coeffs[:, 1:8].clone())
        self.register_buffer("low", coeffs[:, 8:15].clone())

    def _a(self, T: torch.Tensor) -> torch.Tensor:
        """Each member's coefficients, ``(..., K, 7)``."""
        low = (T[..., None] <= self.t_mid)[..., None]
        return torch.where(low, self.low, self.high)

    def cp_R(self, T: torch.Tensor) -> torch.Tensor:
        a, t = self._a(T), T[..., None]
        return a[..., 0] + t * (a[..., 1] + t * (a[..., 2] + t * (a[..., 3] + t * a[..., 4])))

    def h_RT(self, T: torch.Tensor) -> torch.Tensor:
        a, t = self._a(T), T[..., None]
        return (a[..., 0] + t * (a[..., 1] / 2 + t * (a[..., 2] / 3 + t * (a[..., 3] / 4 + t * a[..., 4] / 5)))
                + a[..., 5] / t)

    def s_R(self, T: torch.Tensor) -> torch.Tensor:
        a, t = self._a(T), T[..., None]
        return (a[..., 0] * torch.log(t) + t * (a[..., 1] + t * (a[..., 2] / 2 + t * (a[..., 3] / 3 + t * a[..., 4] / 4)))
                + a[..., 6])

    def g_RT(self, T: torch.Tensor) -> torch.Tensor:
        """Standard Gibbs energy over RT, ``h/RT - s/R``."""
        return self.h_RT(T) - self.s_R(T)
