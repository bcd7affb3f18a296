"""The table of ratios (Markdown, for the terminal and the README) and the plot of cost growth.

The plot is drawn by bench/plot.py with matplotlib from bench/.venv-peers, so the service's own
environment never needs matplotlib.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from bench.common import PEERS_PYTHON, RESULTS, ROOT


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return "—"
    return f"{ours / theirs:.2f}x"


def _peer_rows(
    consumers: dict[str, dict[str, float]],
    peers: tuple[str, ...],
    measures: list[tuple[str, str, int, str]],
) -> list[tuple[str, str, str, str, str]]:
    """Sluiceway against each peer that ran: a row per (label, key, digits, aim) measure."""
    ours = consumers.get("sluiceway", {})
    out = []
    for peer in peers:
        theirs = consumers.get(peer)
        if theirs is None:
            continue
        for label, key, digits, aim in measures:
            out.append(
                (
                    f"{label} ({peer})",
                    _f(ours.get(key), digits),
                    _f(theirs[key], digits),
                    _ratio(ours.get(key), theirs[key]),
                    aim,
                )
            )
    return out


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(measurement, Sluiceway, peer, ratio, aim) rows for what the run measured."""
    out: list[tuple[str, str, str, str, str]] = []
    for size, d in (results.get("dispatch") or {}).items():
        for path, ours in d["sluiceway_per_s"].items():
            sync = path.startswith("sync")
            floor = d["floor_per_s"]["sync" if sync else "async"]
            aim = ""
            if size == "1" and path == "sync":
                aim = "≤ 1.5x"
            elif size == "1" and path == "sync, telemetry on":
                aim = "≤ 2x"
            out.append(
                (
                    f"dispatch, batch {size}, {'sync' if sync else 'async'} handler"
                    f"{', tracing and metrics on' if 'telemetry on' in path else ''}: "
                    f"invocations/s ({'executor hop + copy' if sync else 'await + copy'})",
                    _f(ours, 0),
                    _f(floor, 0),
                    f"{floor / ours:.2f}x the time",
                    aim,
                )
            )
    kin = results.get("kinesis_e2e")
    if kin:
        drain = f"Kinesis drain {kin['records']:,} rec / {kin['shards']} shards: s"
        out += _peer_rows(
            kin["consumers"],
            ("aiobotocore loop", "async-kinesis"),
            [
                (drain, "seconds", 2, "faster; ≤ 1.3x loop"),
                ("Kinesis CPU-s per 10k", "cpu_per_10k", 2, "less; ≤ 1.3x loop"),
            ],
        )
    sqs = results.get("sqs_e2e")
    if sqs:
        out += _peer_rows(
            sqs["consumers"],
            ("aiobotocore loop", "sqs-consumer"),
            [
                (f"SQS {sqs['messages']:,} msgs: msg/s", "rate", 0, "≥ both"),
                ("SQS CPU-s per 10k", "cpu_per_10k", 2, "≤ 1.3x loop"),
            ],
        )
    lat = results.get("latency")
    if lat:
        for source, peer, aim in (
            ("sqs", "sqs-consumer", "p50 ≤ 50 ms"),
            ("sqs", "aiobotocore loop", ""),
            ("kinesis", "async-kinesis", "p50 ≤ 110, p99 ≤ 250 ms"),
            ("kinesis", "aiobotocore loop", ""),
        ):
            ours, theirs = lat[source].get("sluiceway"), lat[source].get(peer)
            if ours and theirs:
                shards = f", {lat['kinesis_shards']} shards" if source == "kinesis" else ""
                out.append(
                    (
                        f"{source} put→handler p50 / p99 ms{shards} ({peer})",
                        f"{_f(ours['p50_ms'], 0)} / {_f(ours['p99_ms'], 0)}",
                        f"{_f(theirs['p50_ms'], 0)} / {_f(theirs['p99_ms'], 0)}",
                        _ratio(ours["p50_ms"], theirs["p50_ms"]),
                        aim,
                    )
                )
    calls = results.get("calls")
    if calls:
        out.append(
            (
                "empty GetRecords: CPU µs per call (stock aiobotocore)",
                _f(calls["sluiceway"], 0),
                _f(calls["stock aiobotocore"], 0),
                _ratio(calls["sluiceway"], calls["stock aiobotocore"]),
                "≤ 0.3x",
            )
        )
    scale = results.get("scale")
    if scale:
        label = f"{scale['shards']} shards + {scale['queues']} queues"
        out.append((f"{label}: RSS MB", _f(scale["rss_mb"], 0), "", "", "≤ 250"))
        out.append(
            (
                f"{label}: idle CPU, every shard polled at least once a second (the default, "
                f"Lambda's bound), % of a core over {scale['idle_seconds']:.0f} s",
                _f(scale["idle_cpu_share"] * 100, 1),
                "",
                "",
                "≤ 15",
            )
        )
        if "idle_cpu_share_alternative" in scale:
            wait = scale["idle_poll_alternative_seconds"]
            out.append(
                (
                    f"{label}: idle CPU with idle_poll_max_seconds={wait:g}, % of a core",
                    _f(scale["idle_cpu_share_alternative"] * 100, 1),
                    "",
                    "",
                    "",
                )
            )
        if scale.get("probes"):
            out.append(
                (
                    f"{label}: first record after the quiet spell, put→handler p50 / p99 ms "
                    f"({scale['probes']} probes; kinesalite "
                    f"{scale.get('kinesalite_share', float('nan')):.0%} of a core)",
                    f"{_f(scale['first_record_p50_ms'], 0)} / {_f(scale['first_record_p99_ms'], 0)}",
                    "",
                    "",
                    "p99 ≤ 1,100",
                )
            )
        out.append(
            (
                f"{label}: s until every shard has a reader",
                _f(scale["seconds_to_acquire"], 1),
                "",
                "",
                "",
            )
        )
    return out


def table(results: dict[str, Any]) -> str:
    lines = [
        "| measurement (peer) | Sluiceway | peer | Sluiceway / peer | aim |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows(results)]
    return "\n".join(lines)


def header(results: dict[str, Any]) -> str:
    m = results["machine"]
    v = ", ".join(f"{k} {val}" for k, val in results["versions"].items())
    return (
        f"Machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}; load average at start "
        f"{m['load_avg']}, at end {results.get('load_avg_end')}; medians of {results['repeats']} "
        f"runs; {results.get('seconds', 0):.0f} s in all.\nVersions: {v}."
    )


def growth_lines(results: dict[str, Any]) -> str:
    g = results.get("growth")
    if not g:
        return ""
    parts = []
    for axis in ("batch_size", "record_size", "shards"):
        points = ", ".join(
            f"{k}: {v['sluiceway']:.0f} / {v['aiobotocore loop']:.0f}" for k, v in g[axis].items()
        )
        parts.append(
            f"- CPU µs per record (Sluiceway / aiobotocore loop) by {axis.replace('_', ' ')}: {points}"
        )
    return "\n".join(parts)


def plot(path: Path) -> Path | None:
    """Draw bench/results/growth.png from `path`; None when matplotlib is not installed."""
    if not PEERS_PYTHON.exists():
        return None
    target = RESULTS / "growth.png"
    done = subprocess.run(
        [str(PEERS_PYTHON), str(ROOT / "bench" / "plot.py"), str(path), str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return target if done.returncode == 0 else None


def emulator_lines(results: dict[str, Any]) -> str:
    """The emulator's CPU during each drain: at EMULATOR_BOUND or more it set the pace."""
    from bench.emulators import EMULATOR_BOUND

    out = []
    for key, source in (("kinesis_e2e", "kinesalite"), ("sqs_e2e", "ministack")):
        consumers = (results.get(key) or {}).get("consumers") or {}
        shares = {n: c["emulator_share"] for n, c in consumers.items() if "emulator_share" in c}
        if not shares:
            continue
        parts = ", ".join(f"{n} {v:.0%}" for n, v in shares.items())
        bound = [n for n, v in shares.items() if v >= EMULATOR_BOUND]
        verdict = (
            f"the emulator was the bottleneck for {', '.join(bound)}"
            if bound
            else "the emulator was not the bottleneck"
        )
        out.append(
            f"{source} CPU during each consumer's drain (share of a core): {parts}; {verdict}."
        )
    return "\n".join(out)


def render(path: Path) -> str:
    results = json.loads(path.read_text())
    parts = (
        header(results),
        table(results),
        emulator_lines(results),
        growth_lines(results),
    )
    return "\n\n".join(p for p in parts if p)
