"""`python -m bench`: every benchmark in one run, a table of ratios, a plot, results as JSON.

`--quick` shrinks every workload (a check that the harness runs, not numbers to quote);
`--only dispatch,kinesis,...` picks suites; results land in bench/results/ (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import calls, dispatch, growth, kinesis_e2e, latency, scale, sqs_e2e
from bench.common import RESULTS, machine, versions
from bench.report import plot, render

SUITES = ("dispatch", "calls", "kinesis", "sqs", "latency", "scale", "growth")


def plan(args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    q = args.quick
    r = args.repeats
    return {
        "dispatch": lambda: dispatch.run(2_000 if q else 50_000, r),
        "kinesis": lambda: kinesis_e2e.run(5_000 if q else 100_000, 4, r, args.kinesis_batch),
        "sqs": lambda: sqs_e2e.run(300 if q else 2_000, r),
        "latency": lambda: latency.run(10 if q else 100, 5.0),
        "calls": lambda: calls.run(300 if q else 3_000, r),
        "scale": lambda: scale.run(
            64 if q else 512, 8 if q else 64, 5.0 if q else 30.0, 10 if q else 100
        ),
        "growth": lambda: growth.run(2_000 if q else 20_000, 1 if q else r),
    }


_KEYS = {"kinesis": "kinesis_e2e", "sqs": "sqs_e2e"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only", default=",".join(SUITES), help=f"comma-separated: {', '.join(SUITES)}"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--kinesis-batch", type=int, default=100, help="Sluiceway's BatchSize for Kinesis"
    )
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SUITES)
    if unknown:
        parser.error(f"unknown suites: {', '.join(sorted(unknown))}")
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": machine(),
        "versions": versions(),
        "repeats": args.repeats,
    }
    print(
        json.dumps({"machine": results["machine"], "versions": results["versions"]}, indent=1),
        flush=True,
    )
    suites = plan(args)
    for name in chosen:
        print(f"== {name}", file=sys.stderr, flush=True)
        began = time.monotonic()
        try:
            results[_KEYS.get(name, name)] = suites[name]()
        except Exception as exc:  # one broken suite must not lose the others' numbers
            results.setdefault("failed", {})[name] = f"{type(exc).__name__}: {exc}"
            print(f"  {name} failed: {exc}", file=sys.stderr)
        print(f"  {name}: {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
    results["seconds"] = time.monotonic() - started
    results["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "latest.json"
    path.write_text(json.dumps(results, indent=1))
    print(render(path))
    if "growth" in results:
        drawn = plot(path)
        print(
            f"\nplot: {drawn}"
            if drawn
            else "\nplot: not drawn (bench/.venv-peers has no matplotlib)"
        )
    if results.get("failed"):
        print(f"failed suites: {results['failed']}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
