"""Return codes and the error raised when a solve fails."""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Optional

import torch

if TYPE_CHECKING:  # pragma: no cover
    from ._solution import ODESolution

__all__ = ["ReturnCode", "SolveError"]


class ReturnCode(enum.IntEnum):
    """Outcome of a solve, per independent problem (names follow SciMLBase.ReturnCode)."""

    Success = 0
    MaxIters = 1
    DtLessThanMin = 2
    Unstable = 3
    InitialFailure = 4
    ConvergenceFailure = 5
    Terminated = 6
    #: a failure the solver reported without a more specific code (julia engine: MaxTime, Infeasible, ...)
    Failure = 7

    @property
    def successful(self) -> bool:
        return self in (ReturnCode.Success, ReturnCode.Terminated)

    @property
    def explanation(self) -> str:
        return _EXPLANATIONS[self]


_EXPLANATIONS = {
    ReturnCode.Success: "the integration reached the end of tspan",
    ReturnCode.MaxIters: "the number of step attempts reached maxiters",
    ReturnCode.DtLessThanMin: "the step size fell below dtmin",
    ReturnCode.Unstable: "non-finite values (NaN/Inf) appeared in the solution or in f",
    ReturnCode.InitialFailure: "f(u0, p, t0) is not finite",
    ReturnCode.ConvergenceFailure: "the nonlinear (Newton) iterations did not converge",
    ReturnCode.Terminated: "the integration was terminated early on request",
    ReturnCode.Failure: "the solver reported a failure without a more specific code",
}


def _hint(code: ReturnCode, stiff_alg: bool, adaptive: bool) -> str:
    if code in (ReturnCode.MaxIters, ReturnCode.DtLessThanMin):
        if not stiff_alg:
            return ("the problem may be stiff: explicit methods need tiny steps on stiff problems, "
                    "try a stiff algorithm such as Rodas5P() (or Rosenbrock23() at loose tolerances, or "
                    "AutoTsit5(Rosenbrock23()) to switch automatically); "
                    "otherwise look for a singularity of the solution near t, or raise maxiters")
        return "look for a singularity of the solution near t, loosen the tolerances or raise maxiters"
    if code is ReturnCode.Unstable and not adaptive:
        return ("a fixed-step method cannot retry with a smaller step: reduce dt, or use an adaptive "
                "method; check f for divisions by zero or log/sqrt of negative values")
    if code is ReturnCode.Unstable:
        return ("shrinking the step did not remove them: check f for divisions by zero, log/sqrt of "
                "negative values or a solution that blows up; a stiff algorithm helps when the blow-up is an explicit "
                "method's instability")
    if code is ReturnCode.InitialFailure:
        return "evaluate f(u0, p, t0) yourself and check it for NaN/Inf"
    return ""


class SolveError(RuntimeError):
    """Raised by ``solve(..., throw=True)`` when a member's integration fails.

    Attributes:
        solution: the :class:`~pyode.ODESolution` as it stood (partial results, per-member ``retcode``).
        failed: flat indices of the failing batch members.
    """

    def __init__(self, solution: "ODESolution", failed: torch.Tensor, t: torch.Tensor, dt: torch.Tensor,
                 codes: torch.Tensor, stiff_alg: bool, adaptive: bool, batch_shape: torch.Size, max_listed: int = 5):
        self.solution = solution
        self.failed = failed
        lines = []
        for idx in failed[:max_listed].tolist():
            code = ReturnCode(int(codes[idx]))
            where = "" if len(batch_shape) == 0 else f"member {_unravel(idx, batch_shape)}: "
            lines.append(f"  {where}{code.name} at t={float(t[idx]):.6g} with dt={float(dt[idx]):.3g} "
                         f"({code.explanation})")
        if len(failed) > max_listed:
            lines.append(f"  ... and {len(failed) - max_listed} more (see err.solution.retcode)")
        first = ReturnCode(int(codes[failed[0]]))
        header = ("solve failed" if len(batch_shape) == 0
                  else f"solve failed for {len(failed)} of {int(torch.Size(batch_shape).numel())} batch members")
        hint = _hint(first, stiff_alg, adaptive)
        msg = header + ":\n" + "\n".join(lines)
        if hint:
            msg += f"\nHint: {hint}."
        msg += "\nPass throw=False to get the partial solution with per-member retcodes instead."
        super().__init__(msg)


def _unravel(idx: int, shape: torch.Size) -> Optional[tuple]:
    out = []
    for n in reversed(shape):
        out.append(idx % n)
        idx //= n
    return tuple(reversed(out))
