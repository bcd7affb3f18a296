"""The benchmark harness still runs: its dispatch benchmark at a tiny size (no timing asserted)."""

from __future__ import annotations

from bench import dispatch
from bench.report import table


def test_dispatch_benchmark_runs_and_reports() -> None:
    result = dispatch.run(records=40, repeats=1, sizes=(1, 10))
    assert set(result) == {"1", "10"}
    for row in result.values():
        assert row["invocations"] > 0
        assert set(row["sluiceway_per_s"]) == set(dispatch.PATHS)
        assert all(rate > 0 for rate in row["sluiceway_per_s"].values())
        assert row["floor_per_s"]["sync"] > 0 and row["floor_per_s"]["async"] > 0
    assert "dispatch, batch 10, sync handler, tracing and metrics on" in table({"dispatch": result})
