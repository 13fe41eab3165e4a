"""Argument types and settings shared by the demos' and ``pyode fit``'s command lines."""
from __future__ import annotations

import argparse
import contextlib
import difflib
import math
from typing import Any, Dict, Iterator

import torch


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run with one torch intra-op thread, restoring the setting after.

    The demos' tensors hold tens of numbers: a second thread cannot help, and on a busy machine it
    only spins (measured on the spiral's training step: 16 ms with one thread, 120 ms with two).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def name_in(table: Dict[str, Any], what: str):
    """An argparse ``type`` accepting a key of ``table`` (any case); unknown names list the choices."""
    def parse(text: str) -> str:
        key = text.strip().lower()
        if key in table:
            return key
        close = difflib.get_close_matches(key, list(table), n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; {hint}choose one of: {', '.join(table)}")
    return parse


def positive_float(flag: str):
    """An argparse ``type`` accepting finite numbers > 0, with a message naming ``flag``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number; got {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{flag} must be a finite number > 0; got {text}")
        return value
    return parse


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
