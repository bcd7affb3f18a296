"""Async handlers, one behaviour each."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.lowlevel


async def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    await anyio.lowlevel.checkpoint()
    return {"records": len(event["Records"]), "request_id": context.aws_request_id}


async def boom(event: dict[str, Any], context: Any) -> None:
    raise KeyError("customer")


async def sleeps(event: dict[str, Any], context: Any) -> str:
    await anyio.sleep(event["sleep"])
    return "woke up"


async def thread_ident(event: dict[str, Any], context: Any) -> int:
    return threading.get_ident()


class AsyncCallable:
    async def __call__(self, event: dict[str, Any], context: Any) -> str:
        return "called"


callable_object = AsyncCallable()
