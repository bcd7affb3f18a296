"""A function's traceback as Lambda's runtime logs it: from the function's own first frame on.

The frames above it (the invoker, the worker loop, anyio's and asyncio's machinery) are the same
for every error and say nothing about the function; a user reading the log wants their own code.
Standard library only: worker processes use it before the function's code is imported.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
from types import TracebackType

_HANDLERS = os.path.dirname(os.path.abspath(__file__))


def _runtime_dirs() -> tuple[str, ...]:
    dirs = [_HANDLERS, os.path.dirname(asyncio.__file__)]
    dirs.append(os.path.dirname(concurrent.futures.__file__))
    anyio = sys.modules.get("anyio")  # in the service; a worker does not load it
    if anyio is not None and anyio.__file__:
        dirs.append(os.path.dirname(anyio.__file__))
    return tuple(d + os.sep for d in dirs)


def function_frames(tb: TracebackType | None) -> TracebackType | None:
    """`tb` from its first frame outside Sluiceway's runtime; all of it if every frame is inside
    (an error of the runtime itself)."""
    runtime = _runtime_dirs()
    first = tb
    while first is not None and first.tb_frame.f_code.co_filename.startswith(runtime):
        first = first.tb_next
    return first or tb
