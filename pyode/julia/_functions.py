"""Right-hand sides written in Julia: user source, translated networks, and their composition.

A :class:`JuliaFunction` is Julia source for ``f(u, p, t)`` plus named PyTorch networks the source
may call. It is compiled, on the Julia side, into one function ``g(u, θ, t)`` over a flat
parameter vector ``θ = [p..., network₁ parameters..., network₂ ...]``; on the torch side ``θ`` is
``torch.cat`` of those tensors, so the gradient Julia returns for ``θ`` flows back to every
tensor of ``p`` and every network parameter through ordinary autograd.
"""
from __future__ import annotations

import keyword
import re
from typing import Dict, Iterator, List, Optional

import torch
from torch import nn

from ._translate import NetworkTranslation, translate

__all__ = ["JuliaFunction", "ode_function", "flat_parameters"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = {"u", "p", "t", "x", "θ", "end", "function", "begin", "let", "return", "nothing", "true", "false"}


class JuliaFunction:
    """A right-hand side ``f(u, p, t)`` written in Julia, for ``solve(..., backend="julia")``.

    Create it with :func:`ode_function`. It can be the ``f`` of an :class:`~pyode.ODEProblem`, whose
    ``p`` (a tensor, tuple/list/dict of tensors, or None) reaches the Julia function as one flat
    Float64 vector in the order of its tensors. It cannot be evaluated by the native engine.

    Attributes:
        source: the user's Julia source.
        networks: name → :class:`~pyode.julia.NetworkTranslation` of each PyTorch network the source calls.
    """

    _pyode_julia_only = True

    def __init__(self, source: str, networks: Dict[str, nn.Module]):
        if not isinstance(source, str) or not source.strip():
            raise TypeError("source must be a non-empty string of Julia code defining f(u, p, t), e.g. "
                            "\"(u, p, t) -> [u[2], -p[1] * u[1]]\"")
        self.source = source
        self.networks: Dict[str, NetworkTranslation] = {}
        for name, module in networks.items():
            if not _IDENTIFIER.match(name) or name in _RESERVED or name.startswith("_pyode") or keyword.iskeyword(name):
                raise ValueError(f"network name {name!r} cannot be used: pick an identifier other than "
                                 f"{sorted(_RESERVED)} that does not start with _pyode")
            self.networks[name] = translate(module, name)
        self._compiled: Dict[int, object] = {}

    def parameters(self) -> Iterator[torch.Tensor]:
        """The parameters of the networks, in θ order (pass them to an optimizer)."""
        for tr in self.networks.values():
            yield from tr.parameters

    def theta(self, p) -> torch.Tensor:
        """The flat parameter vector ``[p..., networks...]`` (float64, differentiable)."""
        parts = [flat_parameters(p)] + [tr.flatten().to(torch.float64).reshape(-1) for tr in self.networks.values()]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def julia_source(self, n_user: int) -> str:
        """The composed Julia function ``(u, θ, t) -> du`` for ``n_user`` entries of ``p``."""
        lines = ["let"]
        for name, tr in self.networks.items():
            lines.append(f"    _pyode_net_{name} = {_indent(tr.source, 4).lstrip()}")
        lines.append("    function (u, _pyode_θ, t)")
        lines.append(f"        p = _pyode_θ[1:{n_user}]")
        offset = n_user
        for name, tr in self.networks.items():
            lines.append(f"        {name} = x -> _pyode_net_{name}(x, _pyode_θ[{offset + 1}:{offset + tr.n_params}])")
            offset += tr.n_params
        lines.append("        _pyode_f = begin")
        lines.append(_indent(self.source.strip("\n"), 12))
        lines.append("        end")
        lines.append("        return _pyode_f(u, p, t)")
        lines.append("    end")
        lines.append("end")
        return "\n".join(lines) + "\n"

    def __call__(self, u, p, t):
        raise TypeError("this right-hand side is written in Julia (pyode.julia.ode_function): solve it with "
                        "backend='julia', or write f in PyTorch for the native engine")

    def __repr__(self) -> str:
        nets = ", ".join(f"{k}={tr.n_in}→{tr.n_out} ({tr.n_params} parameters)" for k, tr in self.networks.items())
        first = self.source.strip().splitlines()[0]
        return f"JuliaFunction({first!r}{', ' + nets if nets else ''})"


def ode_function(source, **networks: nn.Module) -> JuliaFunction:
    """A right-hand side written in Julia (the fastest route of the julia engine).

    Arguments:
        source: Julia source whose value is an out-of-place function ``(u, p, t) -> du``: an
            anonymous function, or a ``function name(u, p, t) ... end`` definition, optionally after
            helper definitions. ``u`` is a ``Vector``, ``p`` the flat parameter vector, ``t`` a number;
            return a new vector (no mutation: the adjoints differentiate it with Zygote). Or a
            PyTorch ``nn.Sequential`` alone: the right-hand side is that network of ``u``.
        **networks: PyTorch ``nn.Sequential`` networks of ``Linear`` layers and standard
            activations, by the name the source calls them with (``nn(u)``): each is translated to
            Julia over its own slice of the flat parameter vector, and its torch parameters receive
            the gradients (a hybrid model: known physics in the source plus a network).

    Example::

        net = pyode.nn.mlp(2, 2, width=16)
        rhs = pyode.julia.ode_function('''
            (u, p, t) -> [p[1] * u[1], -p[2] * u[2]] .+ nn(u)
        ''', nn=net)
        prob = pyode.ODEProblem(rhs, u0, (0.0, 5.0), p=torch.tensor([1.3, 1.8], requires_grad=True))
        sol = pyode.solve(prob, pyode.Tsit5(), backend="julia", sensealg=pyode.GaussAdjoint())

    Raises:
        TypeError: an unsupported layer (named) or a source that is not a string.
    """
    if isinstance(source, nn.Module):
        if networks:
            raise TypeError("pass either a network alone or Julia source with named networks, not both")
        return JuliaFunction("(u, p, t) -> network(u)", {"network": source})
    return JuliaFunction(source, networks)


def flat_parameters(p) -> torch.Tensor:
    """Every floating tensor in ``p`` (tensor, tuple/list/dict, module, None), flattened and
    concatenated as float64 in ``p``'s order; differentiable."""
    from .._params import _walk

    found: List = []
    modules: List[nn.Module] = []
    _walk(p, (), modules, found)
    parts = [t.reshape(-1).to(torch.float64) for _, t in found if t.is_floating_point()]
    if not parts:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([x.cpu() for x in parts])


def _indent(text: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line if line.strip() else line for line in text.splitlines())


def sequential_of(prob) -> Optional[nn.Module]:
    """The network of a :class:`pyode.nn.NeuralODE` problem when it can be translated, else None."""
    from .. import nn as pnn

    if prob.f is pnn._model_rhs and isinstance(prob.p, (nn.Sequential, nn.Linear)):
        try:
            translate(prob.p, "network")
        except (TypeError, ValueError):
            return None
        return prob.p
    return None
