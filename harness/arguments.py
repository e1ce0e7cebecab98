"""Command-line argument parsing shared by `harness tasks` and `harness bench`: an error is one line plus a
hint (argparse prints its whole usage block), and counts are checked as they are parsed (argparse checks
only that they are integers, so `--limit 0` or `--rollouts 0` were read as something else or ran forever)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser (and its sub-parsers) whose errors are `PROG: error: what` and a `hint:` line."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}\n  hint: {self.prog} --help", file=sys.stderr)
        sys.exit(2)


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type`: an integer of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    return parse


def counts(minimum: int) -> Callable[[str], list[int]]:
    """An argparse `type`: comma-separated integers, each at least `minimum` (e.g. `--rollouts 1,4`)."""
    one = at_least(minimum)

    def parse(text: str) -> list[int]:
        values = [one(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"no values in {text!r}; give integers >= {minimum}, e.g. 1,4")
        return values

    return parse


def fraction_open(text: str) -> float:
    """An argparse `type`: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {value}")
    return value
