"""The compose stack's observability files agree with each other and with the service."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _mounted_files(service: str) -> list[Path]:
    return [
        ROOT / v.split(":")[0]
        for v in COMPOSE["services"][service].get("volumes", [])
        if v.startswith("./")
    ]


def test_every_mounted_config_exists() -> None:
    for service in ("otel-collector", "prometheus", "grafana"):
        for path in _mounted_files(service):
            assert path.exists(), f"{service} mounts {path}, which is missing"


def test_collector_sends_traces_to_jaeger_and_exposes_metrics() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["receivers"] == ["otlp"]
    assert "otlp/jaeger" in pipelines["traces"]["exporters"]
    assert "prometheus" in pipelines["metrics"]["exporters"]
    variable = config["exporters"]["otlp/jaeger"]["endpoint"].removeprefix("${env:").rstrip("}")
    assert variable in COMPOSE["services"]["otel-collector"]["environment"]
    sluiceway_env = COMPOSE["services"]["sluiceway"]["environment"]
    assert sluiceway_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"


def test_prometheus_scrapes_the_service_metrics_endpoint() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["sluiceway"]["static_configs"][0]["targets"] == ["sluiceway:8080"]
    assert jobs["sluiceway"]["metrics_path"] == "/metrics"


def test_dashboard_uses_the_provisioned_data_sources() -> None:
    provisioned = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/datasources.yaml").read_text()
    )
    uids = {source["uid"]: source["type"] for source in provisioned["datasources"]}
    assert uids == {"prometheus": "prometheus", "jaeger": "jaeger"}
    grafana_env = COMPOSE["services"]["grafana"]["environment"]
    for source in provisioned["datasources"]:
        assert source["url"].strip("${}") in grafana_env
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/sluiceway.json").read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("throughput", "error", "iterator age", "destination", "duration"):
        assert topic in titles
