"""Translate a PyTorch multilayer perceptron into Julia source over a flat parameter vector.

:func:`translate` turns an ``nn.Sequential`` of ``nn.Linear`` layers and standard activations (or a
single ``nn.Linear``) into the text of a Julia anonymous function ``function (x, θ) ... end`` that
computes the same network with every parameter read from one flat vector ``θ``, plus the
:class:`NetworkTranslation` bookkeeping that moves parameters between the torch module and that
vector.

The generated Julia is written to be differentiated by ForwardDiff (dual numbers), ReverseDiff and
Zygote alike: it never mutates an array, allocates nothing up front and annotates no types, so it is
generic in the element type. ``x`` may be a vector ``(n_in,)`` or a matrix ``(n_in, B)`` whose
columns are samples (the transpose of torch's ``(B, n_in)`` batch).

Layout of ``θ``: the parameters in ``module.parameters()`` order, each flattened row-major as
``p.reshape(-1)`` does. A torch weight of shape ``(out, in)`` is therefore, in Julia's column-major
terms, ``transpose(reshape(θ[a:b], in, out))``.

Each activation is written as torch's own CPU formula (same operations, same constants), so the two
sides agree to rounding. Where a formula overflows to ``Inf`` in a branch the result does not use
(Softplus, ELU, CELU) or where the result no longer depends on the input (Mish), the overflowing
argument is clamped at a point where the value is unchanged: the value stays torch's, and
automatic differentiation does not meet ``0 * Inf = NaN``.

Precision: Julia evaluates the network in Float64 (the type of ``x`` and ``θ`` it is given),
whatever the dtype of the torch module; a float32 module's parameters are exactly representable in
Float64, so the Julia network is the float32 network evaluated without float32 rounding.

Known limit: Sigmoid and SiLU use ``exp(-x)``, which overflows for pre-activations below about -709;
the value is still torch's (0 and -0), but its derivative under automatic differentiation is NaN there.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["translate", "NetworkTranslation", "SUPPORTED_LAYERS"]

# What to do instead, appended to every "cannot translate" message.
_ALTERNATIVES = ("Alternatives: give the problem a Python right-hand side f(u, p, t) (the slow path: "
                 "every evaluation calls back into Python), or write the network in Julia with "
                 "pyode.julia.ode_function.")


@dataclass(frozen=True, eq=False)   # eq=False: fields hold tensors, whose == is elementwise
class NetworkTranslation:
    """A network translated to Julia, and the map between its parameters and the flat vector ``θ``.

    Attributes:
        name: the Julia identifier the network is meant to be bound to.
        source: a Julia anonymous function expression ``function (x, θ) ... end``.
        n_in, n_out: input and output sizes.
        n_params: length of ``θ``.
        parameters: the module's parameter tensors, in flat order (``module.parameters()``).
        slices: ``(qualified_name, shape, start, stop)`` per parameter: its place in ``θ``,
            0-based and half-open (``θ[start+1:stop]`` in Julia).
    """
    name: str
    source: str
    n_in: int
    n_out: int
    n_params: int
    parameters: tuple
    slices: tuple

    def flatten(self) -> torch.Tensor:
        """The flat parameter vector (1-D); differentiable, so gradients on it reach each parameter."""
        return torch.cat([p.reshape(-1) for p in self.parameters])

    def unflatten(self, flat) -> Dict[str, torch.Tensor]:
        """Qualified parameter name -> view of ``flat`` with that parameter's shape."""
        flat = self._check_flat(flat)
        return {name: flat[start:stop].view(shape) for name, shape, start, stop in self.slices}

    def load(self, flat) -> None:
        """Copy a flat parameter vector into the module's parameters (not recorded by autograd)."""
        flat = self._check_flat(flat)
        with torch.no_grad():
            for p, (_, shape, start, stop) in zip(self.parameters, self.slices):
                p.copy_(flat[start:stop].view(shape))

    def _check_flat(self, flat) -> torch.Tensor:
        flat = torch.as_tensor(flat)
        if flat.ndim != 1 or flat.numel() != self.n_params:
            raise ValueError(f"expected a flat parameter vector of shape ({self.n_params},) for "
                             f"{self.name!r}; got shape {tuple(flat.shape)}")
        return flat


# ---------------------------------------------------------------------------------------------
# Julia literals and names

def _julia_float(value: float) -> str:
    """A Julia literal that reads back as exactly ``value`` (parenthesised when negative).

    Python's ``repr`` is the shortest text that round-trips, and its forms (``0.1``, ``1e-05``,
    ``1e+16``, ``5e-324``) are also Julia Float64 literals; only the non-finite values are spelled
    differently. Negative values get parentheses so that no operator precedence is involved.
    """
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "(-Inf)"
    text = repr(value)
    return f"({text})" if text.startswith("-") else text


# Reserved words, and the global names the generated code refers to: binding the network to one of
# these would break Julia's parser or, as a global, shadow a function the network itself calls.
# (x and θ are the function's own arguments, so a global of that name is harmless.)
_JULIA_KEYWORDS = frozenset(
    "baremodule begin break catch const continue do else elseif end export false finally for function "
    "global if import let local macro module quote return struct true try using while abstract mutable "
    "primitive type where in isa outer public".split())
_JULIA_NAMES_USED = frozenset(
    "transpose reshape tanh exp expm1 log1p erf ifelse max min abs Inf NaN".split())


def _check_name(name: str) -> None:
    # Julia identifiers: a letter or underscore, then letters, digits, underscores or "!". Names of
    # underscores only are write-only in Julia.
    if (not isinstance(name, str) or not re.fullmatch(r"[^\W\d][\w!]*", name) or set(name) == {"_"}
            or name in _JULIA_KEYWORDS or name in _JULIA_NAMES_USED):
        raise ValueError(f"name={name!r} is not usable as a Julia identifier here: it must start with a "
                         "letter or underscore, continue with letters, digits, '_' or '!', and be neither "
                         f"a Julia keyword nor one of {sorted(_JULIA_NAMES_USED)}")


# ---------------------------------------------------------------------------------------------
# Activations: torch's formula for each, as a Julia broadcast expression of the input variable v.
# Every binary operand is an identifier, literal, call or parenthesised expression, so that the
# meaning never depends on operator precedence.

def _gelu(m: nn.GELU, v: str) -> str:
    if m.approximate == "tanh":
        # torch: 0.5 * x * (1 + tanh(kBeta * (x + kKappa * x^3))), kBeta = sqrt(2) * (2/sqrt(pi)) / 2
        beta = _julia_float(math.sqrt(2.0) * (2.0 / math.sqrt(math.pi)) * 0.5)
        return f"(0.5 .* {v}) .* (1 .+ tanh.({beta} .* ({v} .+ (0.044715 .* (({v} .* {v}) .* {v})))))"
    # torch: x * 0.5 * (1 + erf(x * M_SQRT1_2))
    return f"({v} .* 0.5) .* (1 .+ erf.({v} .* {_julia_float(math.sqrt(0.5))}))"


def _softplus(m: nn.Softplus, v: str) -> str:
    # torch: x * beta > threshold ? x : log1p(exp(x * beta)) / beta. Both branches are evaluated,
    # so exp's argument is capped at the threshold, which changes nothing where that branch is taken.
    beta, threshold = _julia_float(m.beta), _julia_float(m.threshold)
    return (f"ifelse.(({v} .* {beta}) .> {threshold}, {v}, "
            f"log1p.(exp.(min.({v} .* {beta}, {threshold}))) ./ {beta})")


def _elu(m: nn.ELU, v: str) -> str:
    # torch: x > 0 ? x : expm1(x) * alpha (expm1 capped at 0, as the branch is only taken for x <= 0)
    return f"ifelse.({v} .> 0, {v}, expm1.(min.({v}, 0)) .* {_julia_float(m.alpha)})"


def _celu(m: nn.CELU, v: str) -> str:
    # torch: elu with input scale 1/alpha: x > 0 ? x : expm1(x * (1/alpha)) * alpha
    alpha = float(m.alpha)
    if alpha == 0:
        raise ValueError("CELU with alpha=0 is undefined (torch divides by alpha)")
    return (f"ifelse.({v} .> 0, {v}, "
            f"expm1.(min.({v}, 0) .* {_julia_float(1.0 / alpha)}) .* {_julia_float(alpha)})")


def _mish(m: nn.Mish, v: str) -> str:
    # torch: x * tanh(log1p(exp(x))). For x >= 40 the tanh is 1.0 exactly in floating point, so
    # capping x there keeps the value and keeps exp from overflowing.
    return f"{v} .* tanh.(log1p.(exp.(min.({v}, 40))))"


def _hardtanh(m: nn.Hardtanh, v: str) -> str:
    # torch: clamp(x, min_val, max_val) = min(max(x, min_val), max_val)
    return f"min.(max.({v}, {_julia_float(m.min_val)}), {_julia_float(m.max_val)})"


_ACTIVATIONS: Dict[type, Callable[[nn.Module, str], str]] = {
    nn.Tanh: lambda m, v: f"tanh.({v})",
    nn.ReLU: lambda m, v: f"max.({v}, 0)",
    nn.Sigmoid: lambda m, v: f"1 ./ (1 .+ exp.(.-{v}))",            # torch: 1 / (1 + exp(-x))
    nn.SiLU: lambda m, v: f"{v} ./ (1 .+ exp.(.-{v}))",              # torch: x / (1 + exp(-x))
    nn.GELU: _gelu,
    nn.Softplus: _softplus,
    nn.ELU: _elu,
    nn.CELU: _celu,
    nn.LeakyReLU: lambda m, v: f"ifelse.({v} .> 0, {v}, {v} .* {_julia_float(m.negative_slope)})",
    nn.Softsign: lambda m, v: f"{v} ./ (abs.({v}) .+ 1)",             # torch: x / (|x| + 1)
    nn.Mish: _mish,
    nn.Hardtanh: _hardtanh,
    nn.Tanhshrink: lambda m, v: f"{v} .- tanh.({v})",
}

SUPPORTED_LAYERS: Tuple[type, ...] = (nn.Linear, nn.Identity) + tuple(_ACTIVATIONS)


def _label(m: nn.Module) -> str:
    """Short description of a layer for the comment line of the generated function."""
    cls = type(m).__name__
    if isinstance(m, nn.Linear):
        return f"{cls}({m.weight.shape[1]}→{m.weight.shape[0]}{'' if m.bias is not None else ', no bias'})"
    if isinstance(m, nn.GELU) and m.approximate != "none":
        return f"{cls}({m.approximate})"
    if isinstance(m, nn.Softplus):
        return f"{cls}(beta={float(m.beta)!r}, threshold={float(m.threshold)!r})"
    if isinstance(m, (nn.ELU, nn.CELU)):
        return f"{cls}(alpha={float(m.alpha)!r})"
    if isinstance(m, nn.LeakyReLU):
        return f"{cls}({float(m.negative_slope)!r})"
    if isinstance(m, nn.Hardtanh):
        return f"{cls}({float(m.min_val)!r}, {float(m.max_val)!r})"
    return cls


# ---------------------------------------------------------------------------------------------
# Walking the module

def _supported_base(m: nn.Module):
    """The supported class ``m`` is an instance of with that class's own ``forward``, or None.

    Subclasses are accepted only when they keep the base class's ``forward`` (``nn.ReLU6`` is a
    ``Hardtanh``); a subclass computing something else cannot be told apart from its name.
    """
    for base in SUPPORTED_LAYERS:
        if isinstance(m, base) and type(m).forward is base.forward:
            return base
    return None


def _describe(path: str, m: nn.Module) -> str:
    """How messages name a layer: by its index path in the Sequential (``2.0``), or as the module itself."""
    return f"layer {path} ({type(m).__name__})" if path else f"the module ({type(m).__name__})"


def _unsupported(path: str, m: nn.Module, why: str) -> TypeError:
    names = ", ".join(c.__name__ for c in SUPPORTED_LAYERS)
    return TypeError(f"{_describe(path, m)} {why}. Supported layers: {names} (the torch.nn classes, in an "
                     f"nn.Sequential, nested ones included). {_ALTERNATIVES}")


def _check_plain(path: str, m: nn.Module) -> None:
    """Reject modules whose output is changed by hooks or parametrizations (weight_norm and the like)."""
    if m._forward_hooks or m._forward_pre_hooks:
        raise _unsupported(path, m, "has forward hooks, which change its output and cannot be translated")
    if parametrize.is_parametrized(m):
        raise _unsupported(path, m, "has parametrized tensors (torch.nn.utils.parametrize), which cannot "
                                    "be translated")


def _layers(module: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The layers of ``module`` in evaluation order, nested Sequentials flattened, as (path, layer)."""
    if isinstance(module, nn.Linear) and _supported_base(module) is nn.Linear:
        _check_plain("", module)
        return [("", module)]
    if not isinstance(module, nn.Sequential):
        raise TypeError(f"translate() takes an nn.Sequential of supported layers or a single nn.Linear; "
                        f"got {type(module).__name__}. {_ALTERNATIVES}")
    return _sequential_layers(module, "")


def _sequential_layers(seq: nn.Sequential, prefix: str) -> List[Tuple[str, nn.Module]]:
    """The layers of ``seq`` (whose own path is ``prefix`` without its final dot), nested ones flattened."""
    if type(seq).forward is not nn.Sequential.forward:
        raise _unsupported(prefix[:-1], seq, "is an nn.Sequential subclass with its own forward, which cannot "
                                             "be translated")
    _check_plain(prefix[:-1], seq)
    layers = []
    for key, child in seq._modules.items():
        path = prefix + key
        if isinstance(child, nn.Sequential):
            layers += _sequential_layers(child, path + ".")
        elif _supported_base(child) is None:
            raise _unsupported(path, child, "cannot be translated to Julia")
        else:
            _check_plain(path, child)
            layers.append((path, child))
    return layers


def _parameter_slices(module: nn.Module) -> Tuple[tuple, tuple]:
    """(parameters, slices) in ``module.parameters()`` order; a shared parameter appears once."""
    parameters, slices, start = [], [], 0
    for name, p in module.named_parameters():
        if not p.is_floating_point():
            raise TypeError(f"parameter {name} has dtype {p.dtype}; only real floating-point parameters "
                            "can be translated")
        parameters.append(p)
        slices.append((name, tuple(p.shape), start, start + p.numel()))
        start += p.numel()
    return tuple(parameters), tuple(slices)


def _linear_shape(path: str, m: nn.Linear) -> Tuple[int, int]:
    """(in, out) of a Linear layer, from its tensors (the truth, whatever its attributes say)."""
    w, b = m.weight, m.bias
    if w.ndim != 2 or (b is not None and tuple(b.shape) != (w.shape[0],)):
        raise ValueError(f"{_describe(path, m)} has weight shape {tuple(w.shape)} and bias shape "
                         f"{None if b is None else tuple(b.shape)}; expected (out, in) and (out,)")
    return int(w.shape[1]), int(w.shape[0])


# ---------------------------------------------------------------------------------------------
# Code generation

def _theta_range(path: str, tensor: torch.Tensor, where: Dict[int, Tuple[int, int]]) -> str:
    """The Julia range of ``θ`` holding ``tensor``: 1-based and inclusive, from the 0-based half-open slice."""
    if id(tensor) not in where:
        raise TypeError(f"Linear layer {path or '(the module)'} uses a tensor that is not one of the module's "
                        "parameters, so it has no place in the flat parameter vector")
    start, stop = where[id(tensor)]
    return f"{start + 1}:{stop}"


def _linear_code(k: int, path: str, layer: nn.Linear, value: str, where: Dict[int, Tuple[int, int]]) -> List[str]:
    """Julia lines computing ``h{k}``, the Linear layer ``layer`` applied to the variable ``value``."""
    n_in, n_out = _linear_shape(path, layer)
    # torch's (out, in) row-major weight is Julia's column-major (in, out) matrix, transposed.
    lines = [f"W{k} = transpose(reshape(θ[{_theta_range(path, layer.weight, where)}], {n_in}, {n_out}))"]
    if layer.bias is None:
        return lines + [f"h{k} = W{k} * {value}"]
    # .+ broadcasts the bias over the columns of a batch
    return lines + [f"b{k} = θ[{_theta_range(path, layer.bias, where)}]", f"h{k} = (W{k} * {value}) .+ b{k}"]


def _check_chain(previous: Tuple[str, nn.Linear], path: str, layer: nn.Linear) -> None:
    """Consecutive Linear layers must fit: the outputs of one are the inputs of the next."""
    produced, taken = _linear_shape(*previous)[1], _linear_shape(path, layer)[0]
    if produced != taken:
        raise ValueError(f"{_describe(path, layer)} takes {taken} inputs but {_describe(*previous)} "
                         f"produces {produced} outputs")


def translate(module: nn.Module, name: str = "network") -> NetworkTranslation:
    """Translate an ``nn.Sequential`` of Linear layers and activations (or one ``nn.Linear``) to Julia.

    Arguments:
        module: the network. Supported layers: ``nn.Linear`` (with or without bias), ``nn.Identity``,
            ``nn.Tanh``, ``nn.ReLU``, ``nn.Sigmoid``, ``nn.SiLU``, ``nn.GELU`` (both approximations),
            ``nn.Softplus``, ``nn.ELU``, ``nn.CELU``, ``nn.LeakyReLU``, ``nn.Softsign``, ``nn.Mish``,
            ``nn.Hardtanh`` (and ``nn.ReLU6``), ``nn.Tanhshrink``; nested ``nn.Sequential`` are
            flattened.
        name: the Julia identifier the network will be bound to.

    Returns:
        a :class:`NetworkTranslation`; its ``source`` is ``function (x, θ) ... end``.

    Raises:
        TypeError: for a module that is neither an ``nn.Sequential`` nor an ``nn.Linear``, or that holds
            an unsupported layer (the message names the layer's path and class, and the alternatives).
        ValueError: for consecutive Linear layers of mismatched sizes, a network without a Linear
            layer, or a ``name`` that is not a usable Julia identifier.
    """
    _check_name(name)
    layers = _layers(module)
    parameters, slices = _parameter_slices(module)
    where = {id(p): (start, stop) for p, (_, _, start, stop) in zip(parameters, slices)}

    lines: List[str] = []
    linears: List[Tuple[str, nn.Linear]] = []
    value = "x"                                  # the Julia variable holding the current activation
    for k, (path, layer) in enumerate(layers, start=1):
        base = _supported_base(layer)
        if base is nn.Identity:
            continue
        if base is nn.Linear:
            if linears:
                _check_chain(linears[-1], path, layer)
            linears.append((path, layer))
            lines += _linear_code(k, path, layer, value, where)
        else:
            lines.append(f"h{k} = {_ACTIVATIONS[base](layer, value)}")
        value = f"h{k}"
    if not linears:
        raise ValueError("the network has no Linear layer, so its input and output sizes are unknown; "
                         "translate() needs at least one")

    comment = " → ".join(_label(layer) for _, layer in layers)
    body = "\n".join(f"    {line}" for line in [f"# {comment}", *lines, f"return {value}"])
    return NetworkTranslation(name=name, source=f"function (x, θ)\n{body}\nend",
                              n_in=_linear_shape(*linears[0])[0], n_out=_linear_shape(*linears[-1])[1],
                              n_params=sum(p.numel() for p in parameters), parameters=parameters, slices=slices)
