"""Test session set-up: one moto server process, fake credentials, the asyncio backend."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import recording
from tests.support.emulators import (
    Emulator,
    dynamodb_local_path,
    kinesalite_path,
    ministack_path,
    start_dynamodb_local,
    start_kinesalite,
    start_ministack,
    start_moto,
)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    emulator = start_moto()
    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": emulator.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    yield emulator.url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    emulator.stop()


_AWS_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


def _session_emulator(
    name: str, path: Path | None, start: Callable[[Path], Emulator], installs: str
) -> Iterator[str]:
    """An optional emulator for the session: CI must have it, a developer may skip without it."""
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (make test installs it in {installs})")
        pytest.skip(f"{name} is not installed; `make test` installs it")
    emulator = start(path)
    yield emulator.url
    emulator.stop()


@pytest.fixture(scope="session")
def ministack_session() -> Iterator[str]:
    yield from _session_emulator("ministack", ministack_path(), start_ministack, ".venv-ministack")


@pytest.fixture
def ministack_sqs(ministack_session: str, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Route SQS (only) to ministack for this test: AWS's FIFO group semantics, and fast."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", ministack_session)
    return ministack_session


@pytest.fixture(scope="session")
def kinesalite_session() -> Iterator[str]:
    yield from _session_emulator("kinesalite", kinesalite_path(), start_kinesalite, "node_modules")


@pytest.fixture
def kinesalite(kinesalite_session: str, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Route Kinesis (only) to kinesalite for this test: resharding as Kinesis does it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", kinesalite_session)
    return kinesalite_session


@pytest.fixture(scope="session")
def dynamodb_local_session() -> Iterator[str]:
    yield from _session_emulator(
        "DynamoDB Local", dynamodb_local_path(), start_dynamodb_local, ".dynamodb-local (and java)"
    )


@pytest.fixture
def dynamodb_local(
    dynamodb_local_session: str, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Route DynamoDB and DynamoDB Streams (only) to DynamoDB Local for this test."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local_session)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB_STREAMS", dynamodb_local_session)
    return dynamodb_local_session


@pytest.fixture
def recorder() -> Iterator[None]:
    recording.reset()
    yield
    recording.reset()
