"""The tensors inside a problem's ``p`` and calls of ``f`` with some of them replaced.

``p`` is a tensor, a tuple/list/dict of tensors (nested freely), an ``nn.Module``, any of these
mixed, or ``None``. Sensitivity algorithms other than autograd through the solver need the
parameters as explicit tensors: :func:`parameter_leaves` finds those that require grad, and
:class:`ParameterizedRHS` evaluates ``f`` with replacements for them, functionally (what
``torch.func`` transforms need). Modules are swapped through ``torch.func.functional_call``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

__all__ = ["parameter_leaves", "ParameterizedRHS", "captures_trainable"]

# A leaf is addressed by its path: a tuple of keys/indices into containers, ending for module
# parameters with ("module", k, name) where k numbers the modules found in p.
Path = Tuple[Any, ...]


def _walk(p, path: Path, modules: List[nn.Module], out: List[Tuple[Path, torch.Tensor]]) -> None:
    if isinstance(p, torch.Tensor):
        out.append((path, p))
    elif isinstance(p, nn.Module):
        k = len(modules)
        modules.append(p)
        for name, t in p.named_parameters():
            out.append((path + (("module", k, name),), t))
    elif isinstance(p, dict):
        for key, v in p.items():
            _walk(v, path + (key,), modules, out)
    elif isinstance(p, (tuple, list)):
        for i, v in enumerate(p):
            _walk(v, path + (i,), modules, out)


def parameter_leaves(p) -> Tuple[List[Path], List[torch.Tensor], List[nn.Module]]:
    """Paths and tensors of the floating tensors in ``p`` that require grad, and the modules in ``p``."""
    modules: List[nn.Module] = []
    found: List[Tuple[Path, torch.Tensor]] = []
    _walk(p, (), modules, found)
    keep = [(path, t) for path, t in found if t.requires_grad and t.is_floating_point()]
    return [path for path, _ in keep], [t for _, t in keep], modules


def _replace(p, path: Path, value):
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(p, dict):
        q = dict(p)
        q[key] = _replace(p[key], rest, value)
        return q
    if isinstance(p, (tuple, list)):
        q = list(p)
        q[key] = _replace(p[key], rest, value)
        return type(p)(q) if isinstance(p, tuple) and not hasattr(p, "_fields") else (
            type(p)(*q) if isinstance(p, tuple) else q)
    raise TypeError(f"cannot address {path!r} in {type(p).__name__}")


class _Call(nn.Module):
    """``f(u, p, t)`` as a module whose submodules are the modules in ``p`` (for functional_call)."""

    def __init__(self, f: Callable, modules: Sequence[nn.Module]):
        super().__init__()
        self.f = f
        self.mods = nn.ModuleList(modules)

    def forward(self, u, p, t):
        return self.f(u, p, t)


class ParameterizedRHS:
    """``call(u, values, t)``: ``f(u, p, t)`` with the leaves at ``paths`` replaced by ``values``."""

    def __init__(self, f: Callable, p, paths: List[Path], modules: List[nn.Module]):
        self.f, self.p, self.paths = f, p, paths
        self.wrapper = _Call(f, modules) if modules else None

    def __call__(self, u: torch.Tensor, values: Sequence[torch.Tensor], t: torch.Tensor) -> torch.Tensor:
        p = self.p
        swaps: Dict[str, torch.Tensor] = {}
        for path, v in zip(self.paths, values):
            if path and isinstance(path[-1], tuple) and path[-1][:1] == ("module",):
                _, k, name = path[-1]
                swaps[f"mods.{k}.{name}"] = v
            else:
                p = _replace(p, path, v)
        if not swaps:
            return self.f(u, p, t)
        return torch.func.functional_call(self.wrapper, swaps, (u, p, t))


def captures_trainable(f, depth: int = 3) -> bool:
    """Does ``f`` reach tensors that require grad without ``p``: a module, or a tensor, that it is,
    is bound to, closes over, names as a global or holds as an attribute (callable wrappers followed
    ``depth`` levels deep). A miss only costs speed: the default path then takes the reference loop,
    and compiled Rosenbrock solves unroll more iterations per call."""
    if isinstance(f, torch.nn.Module):
        return any(q.requires_grad for q in f.parameters())
    if isinstance(f, torch.Tensor):
        return f.requires_grad
    if depth == 0 or not callable(f) or isinstance(f, type):
        return False
    reached = [getattr(f, "__self__", None), getattr(f, "func", None)]
    reached += [c.cell_contents for c in (getattr(f, "__closure__", None) or ()) if _cell_filled(c)]
    code = getattr(f, "__code__", None)
    if code is not None:
        globs = getattr(f, "__globals__", {})
        reached += [globs[name] for name in code.co_names if name in globs]
    elif hasattr(f, "__dict__"):            # a callable object: what it holds
        reached += list(vars(f).values())
    return any(captures_trainable(obj, depth - 1) for obj in reached if obj is not None)


def _cell_filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:          # a closure variable not yet assigned
        return False
    return True
