"""Outlives re-imports of `init_once`, so tests can count how often its init ran."""

RUNS = 0
