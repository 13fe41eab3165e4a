"""Argument types shared by the demos' command lines."""
from __future__ import annotations

import argparse


def positive_int(flag: str):
    """An argparse ``type`` accepting integers ≥ 1, with a message naming ``flag``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer; got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer; got {value}")
        return value
    return parse


def nonnegative_float(flag: str):
    """An argparse ``type`` accepting finite numbers ≥ 0, with a message naming ``flag``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number; got {text!r}") from None
        if not (value >= 0 and value != float("inf")):
            raise argparse.ArgumentTypeError(f"{flag} must be a finite number >= 0; got {text}")
        return value
    return parse
