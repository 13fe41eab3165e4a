"""Rooted trees and the Butcher order conditions of explicit Runge-Kutta methods.

A rooted tree is the sorted tuple of the subtrees hanging from its root; the single node is ``()``.
Sorting makes the representation canonical, so equal trees compare equal.

For a tree τ with subtrees τ_1..τ_m, the stage weights are Φ_i(•) = 1 and
Φ_i(τ) = Π_k Σ_j a_ij Φ_j(τ_k); the weights b give order p iff Σ_i b_i Φ_i(τ) = 1/γ(τ) for every
τ with ρ(τ) ≤ p, and a continuous extension P_i(θ) has order q iff Σ_i P_i(θ) Φ_i(τ) = θ^ρ(τ)/γ(τ)
for ρ(τ) ≤ q (Hairer, Nørsett, Wanner, Solving ODEs I, Sec. II.2 and II.6).
"""
from fractions import Fraction
from functools import lru_cache
from math import prod

Tree = tuple


def _add_leaf(tree: Tree):
    """Every tree made by attaching one new leaf to some vertex of ``tree``."""
    yield tuple(sorted(tree + ((),)))
    for k, child in enumerate(tree):
        for grown in _add_leaf(child):
            yield tuple(sorted(tree[:k] + (grown,) + tree[k + 1:]))


@lru_cache(maxsize=None)
def trees(order: int) -> tuple:
    """All rooted trees with ``order`` vertices."""
    if order == 1:
        return ((),)
    return tuple(sorted({t for smaller in trees(order - 1) for t in _add_leaf(smaller)}))


def rho(tree: Tree) -> int:
    """Number of vertices."""
    return 1 + sum(rho(child) for child in tree)


def gamma(tree: Tree) -> int:
    """Density: ρ(τ) times the densities of the subtrees."""
    return rho(tree) * prod(gamma(child) for child in tree)


class StageWeights:
    """Φ_i(τ) for each stage of a strictly lower triangular ``a``, computed exactly.

    Coefficients are converted with ``Fraction`` (exact for floats too), so round-off in the
    check itself never hides or fakes a defect.
    """

    def __init__(self, a):
        self.a = [[Fraction(x) for x in row] for row in a]
        self._memo = {}

    def __call__(self, tree: Tree) -> list:
        if tree not in self._memo:
            phi = [Fraction(1)] * len(self.a)
            for child in tree:
                sub = self(child)
                phi = [p * sum((aij * sub[j] for j, aij in enumerate(row)), Fraction(0))
                       for p, row in zip(phi, self.a)]
            self._memo[tree] = phi
        return self._memo[tree]


def residual(weights, phi: list, tree: Tree) -> Fraction:
    """Σ_i w_i Φ_i(τ) - 1/γ(τ)."""
    return sum((Fraction(w) * p for w, p in zip(weights, phi)), Fraction(0)) - Fraction(1, gamma(tree))


def dense_residual(rows, theta: Fraction, phi: list, tree: Tree) -> Fraction:
    """Σ_i P_i(θ) Φ_i(τ) - θ^ρ/γ(τ), with ``rows[i]`` the coefficients of θ¹, θ², ... of P_i."""
    total = Fraction(0)
    for row, p in zip(rows, phi):
        p_theta = sum((Fraction(x) * theta ** (k + 1) for k, x in enumerate(row)), Fraction(0))
        total += p_theta * p
    return total - theta ** rho(tree) / gamma(tree)
