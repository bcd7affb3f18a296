"""The benchmark harness still runs: its dispatch benchmark at a tiny size (no timing asserted)."""

from __future__ import annotations

from bench import dispatch
from bench.report import table


def test_dispatch_benchmark_runs_and_reports() -> None:
    result = dispatch.run(records=40, repeats=1, sizes=(1, 10))
    assert set(result) == {"1", "10"}
    for row in result.values():
        assert row["records"] > 0
        assert row["sluiceway_per_s"] > 0 and row["bare_per_s"] > 0
    assert "dispatch, batch 10" in table({"dispatch": result})
