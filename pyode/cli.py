"""The ``pyode`` command line."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

DEMOS = {
    "orbit": "Arenstorf orbit: work-precision of the explicit methods, a batch of perturbed orbits, "
             "and a gradient checked against finite differences",
}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="pyode", description="pyode: ODE solvers and models in PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a demonstration", description="\n".join(
        f"{k}: {v}" for k, v in DEMOS.items()))
    demo.add_argument("name", choices=sorted(DEMOS), help="which demo")
    demo.add_argument("--out", default="pyode-demo", help="folder for plots and results (default: %(default)s)")
    demo.add_argument("--batch", type=int, default=256, help="perturbed orbits solved as one batch (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.batch < 1:
            parser.error(f"--batch must be a positive integer; got {args.batch}")
        from .demos import orbit

        return orbit.run(out=args.out, batch=args.batch)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
