"""The ``pyode`` command line: ``pyode demo NAME [options]``.

Each demo is a module in :mod:`pyode.demos` with ``DESCRIPTION``, ``add_arguments(parser)`` and
``main(args) -> int`` (which validates its own options with ``parser.error``-style messages);
adding one is one line in :data:`DEMOS`.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# demo name -> module in pyode.demos
DEMOS = {
    "cnf": "cnf",
    "crnn": "crnn",
    "ignition": "ignition",
    "orbit": "orbit",
    "pollu": "pollu",
    "latent-ode": "latent_ode",
    "lotka-volterra-ude": "lotka_volterra_ude",
    "odenet-digits": "odenet_digits",
    "robertson": "robertson",
    "spiral": "spiral",
}


def _demo_module(name: str):
    return importlib.import_module(f"pyode.demos.{DEMOS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyode", description="pyode: ODE solvers and neural ODE models in PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a demonstration", description="Run a demonstration; "
                          "`pyode demo NAME --help` lists its options.")
    demos = demo.add_subparsers(dest="name", required=True, metavar="NAME")
    for name in DEMOS:
        module = _demo_module(name)
        p = demos.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        module.add_arguments(p)
        p.set_defaults(run=module.main)
    from . import fit_cli
    fit = sub.add_parser("fit", help=fit_cli.DESCRIPTION, description=fit_cli.DESCRIPTION)
    fit_cli.add_arguments(fit)
    fit.set_defaults(run=fit_cli.main)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
