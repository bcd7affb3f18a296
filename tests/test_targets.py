"""Handler targets from configuration, and reserved concurrency shared by a function's mappings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from sluiceway.app.service import UnsupportedMapping, build_invoker
from sluiceway.config import ConfigError, load_settings
from sluiceway.config.mapping import MappingConfig
from sluiceway.config.settings import Settings
from sluiceway.core.aws import AwsClients
from sluiceway.handlers.http_target import HttpInvoker
from sluiceway.handlers.invoker import Invoker, PythonInvoker
from sluiceway.handlers.lambda_target import LambdaInvoker
from sluiceway.handlers.process_pool import ProcessPoolInvoker
from sluiceway.handlers.reserved import (
    ConcurrencyPool,
    ReservedInvoker,
    ReservedPools,
    reserved_key,
)
from sluiceway.handlers.results import InvokeFailure, Returned
from sluiceway.pollers.scaling import ConcurrencyScaler
from sluiceway.pollers.sqs import concurrency_cap
from sluiceway.router.response import interpret

pytestmark = pytest.mark.anyio

QUEUE = "arn:aws:sqs:us-east-1:000000000000:orders"
FN_ARN = "arn:aws:lambda:us-east-1:123456789012:function:orders"


def settings(**mappings: dict[str, Any]) -> Settings:
    env = {"AWS_REGION": "us-east-1"}
    for name, fields in mappings.items():
        for key, value in {"source": QUEUE, **fields}.items():
            text = value if isinstance(value, str) else json.dumps(value)
            env[f"SLUICEWAY_MAPPINGS__{name.upper()}__{key.upper()}"] = text
    return load_settings(env)


async def build(config: Settings, name: str, **kwargs: Any) -> Any:
    async with AwsClients("us-east-1") as clients:
        return build_invoker(config.mappings[name], config, clients, **kwargs)


async def test_each_handler_form_gets_its_invoker() -> None:
    config = settings(
        a={"handler": "sluiceway.handlers.examples.orders:handler"},
        b={"handler": "sluiceway.handlers.examples.orders:handler", "isolation": "process"},
        c={"handler": "http://orders:8080"},
        d={"handler": f"{FN_ARN}:live"},
    )
    assert isinstance(await build(config, "a"), PythonInvoker)
    assert isinstance(await build(config, "b"), ProcessPoolInvoker)
    http = await build(config, "c")
    assert isinstance(http, HttpInvoker)
    assert http.url == "http://orders:8080/2015-03-31/functions/function/invocations"
    assert isinstance(await build(config, "d"), LambdaInvoker)


def test_new_fields_load_from_the_environment(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    config = settings(
        orders={
            "handler": "sluiceway.handlers.examples.orders:handler",
            "isolation": "PROCESS",
            "environment": {"TABLE": "orders"},
            "reserved_concurrency": 0,
        },
        remote={"handler": "https://orders.internal", "ca_bundle": str(bundle)},
    )
    orders = config.mappings["orders"]
    assert (orders.isolation, orders.environment, orders.reserved_concurrency) == (
        "process",
        {"TABLE": "orders"},
        0,
    )
    assert config.mappings["remote"].ca_bundle == str(bundle)


def test_a_missing_ca_bundle_is_rejected() -> None:
    with pytest.raises(ConfigError) as caught:
        settings(remote={"handler": "https://orders.internal", "ca_bundle": "/nowhere.pem"})
    assert "existing file" in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "variable"),
    [
        ({"handler": "http://orders:8080", "environment": {"A": "1"}}, "ENVIRONMENT"),
        ({"handler": "sluiceway.handlers.examples.orders:handler", "environment": {"A": "1"}}, "ENVIRONMENT"),
        ({"handler": FN_ARN, "isolation": "process"}, "ISOLATION"),
    ],
)
async def test_settings_that_would_be_ignored_are_refused(
    fields: dict[str, Any], variable: str
) -> None:
    config = settings(orders=fields)
    with pytest.raises(UnsupportedMapping, match=f"SLUICEWAY_MAPPINGS__ORDERS__{variable}"):
        await build(config, "orders")


async def test_mappings_of_one_function_share_its_reserved_concurrency() -> None:
    config = settings(
        a={"handler": FN_ARN, "reserved_concurrency": 2},
        b={"handler": f"{FN_ARN}:live", "reserved_concurrency": 2},
        c={"handler": FN_ARN, "reserved_concurrency": 3},
    )
    pools = ReservedPools()
    a = await build(config, "a", reserved=pools)
    b = await build(config, "b", reserved=pools)
    assert isinstance(a, ReservedInvoker) and a.pool is b.pool
    with pytest.raises(UnsupportedMapping, match="RESERVED_CONCURRENCY"):
        await build(config, "c", reserved=pools)
    assert reserved_key(f"{FN_ARN}:7", "lambda") == FN_ARN


class Slow(Invoker):
    """An invoker that holds its slot for a while, counting calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def invoke(self, event: dict[str, Any]) -> Returned:
        self.calls += 1
        await anyio.sleep(0.1)
        return Returned(None)


async def test_invocations_over_the_reserved_concurrency_are_throttled_not_queued() -> None:
    pool = ConcurrencyPool("orders", 2)
    first, second = Slow(), Slow()
    invokers = [ReservedInvoker(first, pool), ReservedInvoker(second, pool)]  # two mappings
    results: list[Any] = []

    async def call(invoker: ReservedInvoker) -> None:
        results.append(await invoker.invoke({}))

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(call, invokers[i % 2])
    throttles = [r for r in results if isinstance(r, InvokeFailure)]
    assert len(throttles) == 3 and all(t.throttled for t in throttles)
    assert first.calls + second.calls == 2
    assert interpret(throttles[0], [], False).reached_handler is False  # not an attempt
    assert pool.in_flight == 0
    assert isinstance(await invokers[0].invoke({}), Returned)  # slots come back


async def test_reserved_concurrency_zero_throttles_every_invocation() -> None:
    inner = Slow()
    invoker = ReservedInvoker(inner, ConcurrencyPool("orders", 0))
    for _ in range(3):
        result = await invoker.invoke({})
        assert isinstance(result, InvokeFailure) and result.throttled
    assert inner.calls == 0


async def test_a_full_reserved_pool_has_no_room_so_pollers_do_not_grow_into_throttles() -> None:
    pool = ConcurrencyPool("orders", 1)
    invoker = ReservedInvoker(Slow(), pool)
    assert invoker.has_room()
    async with anyio.create_task_group() as tg:
        tg.start_soon(invoker.invoke, {})
        await anyio.sleep(0.02)
        assert not invoker.has_room()
    assert invoker.has_room()


def test_an_sqs_mapping_never_keeps_more_batches_in_flight_than_reserved_concurrency() -> None:
    def cap(**fields: Any) -> int:
        mapping = MappingConfig(
            source="arn:aws:sqs:us-east-1:000000000000:q", handler="m:f", **fields
        )
        return concurrency_cap(mapping)

    assert cap() == 1250
    assert cap(scaling_config={"maximum_concurrency": 5}) == 5
    assert cap(scaling_config={"maximum_concurrency": 5}, reserved_concurrency=3) == 3
    assert cap(reserved_concurrency=1) == 1  # Lambda's floor of 2 pollers would throttle one
    assert ConcurrencyScaler(maximum=cap(reserved_concurrency=1)).target == 1
