"""``jetsplit demo``: the built-in demo.

Evaluates the three demo bundles (little-big, ensemble, split) on the MNIST test
split and prints their table: accuracy, time per image, offload and compute
against running every stage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jetsplit.cli.eval import evaluate, format_table
from jetsplit.demo import DEMO_BUNDLES

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="jetsplit demo", description="run the built-in demo")
    p.add_argument("--split", default="test")
    args = p.parse_args(list(argv))
    results = []
    for name in DEMO_BUNDLES:
        print(f"evaluating demo:{name} on mnist@{args.split} ...", file=sys.stderr, flush=True)
        results.append(evaluate(f"demo:{name}", "mnist", args.split, progress=sys.stderr.isatty()))
    print(format_table(results))
    return 0
