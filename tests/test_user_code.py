"""A function's code is its own, as in Lambda, where each function has its own interpreter with its
code first on sys.path: a user's `handlers`, `config` or `app` runs the user's code in both
isolations, two functions that are both `app.lambda_handler` each run their own (in-process ones
move to worker processes), the working directory is the default code path, and reserved
concurrency belongs to a function's name, never to its handler string."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sluiceway.config import ConfigError
from sluiceway.config.settings import Settings
from sluiceway.handlers.invoker import Invoker, PythonInvoker
from sluiceway.handlers.loader import HandlerLoadError, code_root, load_handler
from sluiceway.handlers.process_pool import ProcessPoolInvoker
from sluiceway.handlers.reserved import ReservedInvoker, ReservedPools, reserved_key
from sluiceway.handlers.results import Returned
from sluiceway.handlers.targets import TargetError, build_target, isolation_for

from tests.support.sqs import (
    count_messages,
    eventually,
    make_queue,
    running,
    send,
    settings_for,
    sqs_client,
)

pytestmark = pytest.mark.anyio

QUEUE = "arn:aws:sqs:us-east-1:000000000000:orders"
ISOLATIONS = ["thread", "process"]
INVOKERS: dict[str, type[Invoker]] = {"thread": PythonInvoker, "process": ProcessPoolInvoker}


@pytest.fixture(autouse=True)
def own_modules(tmp_path: Path) -> Iterator[None]:
    """Forget the user modules a test imported in this process, and restore sys.path, so the next
    test's `app` or `handlers` is a first import rather than this one's."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    root = str(tmp_path.resolve())
    for name, module in list(sys.modules.items()):
        spec = module.__spec__ if isinstance(module, ModuleType) else None
        if spec is not None and spec.origin and spec.origin.startswith(root):
            del sys.modules[name]


def write_code(root: Path, files: dict[str, str]) -> str:
    """A function's code folder holding `files` (relative path -> source)."""
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return str(root)


def settings(**mappings: dict[str, Any]) -> Settings:
    return settings_for({name: {"source": QUEUE, **fields} for name, fields in mappings.items()})


@contextlib.asynccontextmanager
async def built(
    config: Settings, name: str, reserved: ReservedPools | None = None
) -> AsyncIterator[Invoker]:
    invoker = build_target(config.mappings[name], config, reserved=reserved)
    try:
        yield invoker
    finally:
        await invoker.aclose()


async def payload(invoker: Invoker, event: dict[str, Any] | None = None) -> Any:
    await invoker.warm()
    result = await invoker.invoke(event or {})
    assert isinstance(result, Returned), result
    return result.payload


def app_returning(marker: str) -> dict[str, str]:
    """SAM's default layout: app.py with `lambda_handler`."""
    return {"app.py": f"def lambda_handler(event, context):\n    return {marker!r}\n"}


# ---------------------------------------------------------------- modules named like Sluiceway's


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_a_users_own_handlers_package_runs_not_sluicewayss(
    tmp_path: Path, isolation: str
) -> None:
    code = write_code(
        tmp_path / "fn",
        {
            "handlers/__init__.py": "MARKER = 'the user handlers package'\n",
            "handlers/app.py": """
                import handlers

                def handler(event, context):
                    return {"marker": handlers.MARKER, "file": handlers.__file__}
            """,
        },
    )
    config = settings(
        fn={"handler": "handlers.app.handler", "code_path": code, "isolation": isolation}
    )
    assert isolation_for(config.mappings.values()) == {"fn": (isolation, None)}
    async with built(config, "fn") as invoker:
        assert isinstance(invoker, INVOKERS[isolation])
        got = await payload(invoker)
    assert got["marker"] == "the user handlers package"
    assert got["file"] == os.path.join(code_root(code), "handlers", "__init__.py")


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_a_users_own_config_app_and_core_modules_are_what_the_handler_imports(
    tmp_path: Path, isolation: str
) -> None:
    code = write_code(
        tmp_path / "fn",
        {
            "config.py": "TABLE = 'orders-from-user-config'\n",
            "app.py": "NAME = 'user app'\n",
            "core/__init__.py": "NAME = 'user core'\n",
            "orders.py": """
                import app
                import config
                import core

                def handler(event, context):
                    return [config.TABLE, app.NAME, core.NAME, config.__file__]
            """,
        },
    )
    config = settings(fn={"handler": "orders.handler", "code_path": code, "isolation": isolation})
    assert isolation_for(config.mappings.values())["fn"] == (isolation, None)
    async with built(config, "fn") as invoker:
        table, app, core, where = await payload(invoker)
    assert (table, app, core) == ("orders-from-user-config", "user app", "user core")
    assert where == os.path.join(code_root(code), "config.py")


async def test_a_worker_holds_only_the_standard_library_and_sluicewayss_loader_before_user_code(
    tmp_path: Path,
) -> None:
    """Not the parent's main script (multiprocessing's spawn re-ran it), nor its imports
    (pydantic, botocore, ...), nor its working directory on sys.path."""
    code = write_code(
        tmp_path / "fn",
        {
            "probe.py": """
                import sys

                BEFORE = sorted(sys.modules)
                PATH = list(sys.path)

                def handler(event, context):
                    return {"before": BEFORE, "path": PATH}
            """,
        },
    )
    config = settings(fn={"handler": "probe.handler", "code_path": code, "isolation": "process"})
    async with built(config, "fn") as invoker:
        got = await payload(invoker)
    outside_stdlib = {
        name.partition(".")[0]
        for name in got["before"]
        if name.partition(".")[0] not in sys.stdlib_module_names
    }
    assert {name for name in outside_stdlib if not name.startswith("_")} <= {"sluiceway", "probe"}
    service_layers = ("app", "config", "pollers", "router", "core.telemetry", "handlers.invoker")
    assert not [
        name
        for name in got["before"]
        if name.startswith(tuple(f"sluiceway.{layer}" for layer in service_layers))
    ]
    assert got["path"][0] == code_root(code)
    assert os.getcwd() not in got["path"]  # the repository's app/, config/, handlers/ live there


async def test_a_library_the_function_bundles_is_its_own_though_the_service_loaded_another(
    tmp_path: Path,
) -> None:
    """A bundled pydantic (the service runs on its own) cannot load in-process, so the function
    runs in a worker process, where it gets the one it bundles."""
    code = write_code(
        tmp_path / "fn",
        {
            "pydantic/__init__.py": "VERSION = 'bundled with the function'\n",
            "orders.py": """
                import pydantic

                def handler(event, context):
                    return pydantic.VERSION
            """,
        },
    )
    config = settings(fn={"handler": "orders.handler", "code_path": code})
    isolation, reason = isolation_for(config.mappings.values())["fn"]
    assert isolation == "process"
    assert reason is not None and "already holds 'pydantic' from" in reason
    async with built(config, "fn") as invoker:
        assert isinstance(invoker, ProcessPoolInvoker)
        assert await payload(invoker) == "bundled with the function"


# ---------------------------------------------------------------- two functions, one module name


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_two_functions_both_app_lambda_handler_each_run_their_own_code(
    tmp_path: Path, isolation: str, caplog: pytest.LogCaptureFixture
) -> None:
    codes = {name: write_code(tmp_path / f"fn_{name}", app_returning(name)) for name in "ab"}
    config = settings(
        **{
            name: {
                "handler": "app.lambda_handler",
                "code_path": codes[name],
                "isolation": isolation,
            }
            for name in "ab"
        }
    )
    decisions = isolation_for(config.mappings.values())
    if isolation == "thread":
        for name, other in (("a", "b"), ("b", "a")):
            effective, reason = decisions[name]
            assert effective == "process"
            assert reason == (
                f"'app' from its code ({code_root(codes[name])}) and 'app' from mapping "
                f"{other}'s code ({code_root(codes[other])}) cannot both be loaded in one "
                "interpreter"
            )
    else:
        assert decisions == {"a": ("process", None), "b": ("process", None)}

    with caplog.at_level(logging.WARNING, logger="sluiceway.handlers.targets"):
        async with built(config, "a") as a, built(config, "b") as b:
            assert isinstance(a, ProcessPoolInvoker) and isinstance(b, ProcessPoolInvoker)
            assert [await payload(a), await payload(b), await payload(a)] == ["a", "b", "a"]
    warnings = [r.getMessage() for r in caplog.records if "worker processes" in r.getMessage()]
    if isolation == "thread":
        assert len(warnings) == 2
        assert warnings[0].startswith(
            "mapping a (function a) runs in worker processes, as with isolation=process: "
            f"'app' from its code ({code_root(codes['a'])})"
        )
        assert "SLUICEWAY_MAPPINGS__A__ISOLATION=process" in warnings[0]
    else:
        assert warnings == []


async def test_in_process_a_second_app_module_is_refused_rather_than_run_as_the_first(
    tmp_path: Path,
) -> None:
    """What isolation_for prevents: loaded directly, fn_b would get fn_a's `app` from
    sys.modules; the loader refuses instead of running another function's code."""
    code_a = write_code(tmp_path / "fn_a", app_returning("a"))
    code_b = write_code(tmp_path / "fn_b", app_returning("b"))
    a = load_handler("app.lambda_handler", code_a)
    assert a.fn({}, None) == "a"
    assert load_handler("app.lambda_handler", code_a) is a  # cached per function
    with pytest.raises(HandlerLoadError) as refused:
        load_handler("app.lambda_handler", code_b)
    assert refused.value.error_type == "Runtime.ImportModuleError"
    assert f"already holds 'app' from {Path(code_root(code_a)) / 'app.py'}" in refused.value.message
    assert "isolation=process" in refused.value.message


def test_functions_sharing_one_code_folder_or_no_module_names_stay_in_process(
    tmp_path: Path,
) -> None:
    shared = write_code(tmp_path / "shared", {"orders.py": "", "payments.py": "", "json.py": ""})
    other = write_code(tmp_path / "other", {"refunds.py": "", "json.py": ""})
    config = settings(
        orders={"handler": "orders.handler", "code_path": shared},
        payments={"handler": "payments.handler", "code_path": shared},
        refunds={"handler": "refunds.handler", "code_path": other},  # json.py: stdlib's name
        remote={"handler": "http://orders:8080"},
    )
    assert isolation_for(config.mappings.values()) == {
        name: ("thread", None) for name in ("orders", "payments", "refunds", "remote")
    }


def test_a_helper_module_in_two_functions_code_moves_both_to_worker_processes(
    tmp_path: Path,
) -> None:
    code_a = write_code(tmp_path / "fn_a", {"orders.py": "", "utils.py": ""})
    code_b = write_code(tmp_path / "fn_b", {"payments.py": "", "utils.py": ""})
    code_c = write_code(tmp_path / "fn_c", {"refunds.py": ""})
    config = settings(
        a={"handler": "orders.handler", "code_path": code_a},
        b={"handler": "payments.handler", "code_path": code_b},
        c={"handler": "refunds.handler", "code_path": code_c},
    )
    decisions = isolation_for(config.mappings.values())
    assert decisions["a"][0] == decisions["b"][0] == "process"
    assert "'utils' from its code" in (decisions["a"][1] or "")
    assert decisions["c"] == ("thread", None)


def test_a_handler_module_missing_from_its_code_but_in_anothers_moves_both(tmp_path: Path) -> None:
    """fn_c's `app` would come from sys.path, where fn_a's code also is once fn_a loads."""
    code_a = write_code(tmp_path / "fn_a", app_returning("a"))
    code_c = write_code(tmp_path / "fn_c", {"README": ""})
    config = settings(
        a={"handler": "app.lambda_handler", "code_path": code_a},
        c={"handler": "app.lambda_handler", "code_path": code_c},
    )
    decisions = isolation_for(config.mappings.values())
    assert decisions["a"][0] == decisions["c"][0] == "process"
    assert (decisions["c"][1] or "").startswith(
        f"'app' from sys.path (not in its code, {code_root(code_c)}) and 'app' from mapping a's"
    )


def test_a_module_already_loaded_from_elsewhere_moves_the_function(tmp_path: Path) -> None:
    code = write_code(tmp_path / "fn", {"orders.py": "", "shared.py": ""})
    spec = importlib.util.spec_from_file_location("shared", "/elsewhere/shared.py")
    assert spec is not None
    loaded = {"shared": importlib.util.module_from_spec(spec)}
    config = settings(fn={"handler": "orders.handler", "code_path": code})
    assert isolation_for(config.mappings.values(), loaded)["fn"] == (
        "process",
        f"'shared' from its code ({code_root(code)}) cannot be loaded in this process, which "
        "already holds 'shared' from /elsewhere/shared.py",
    )
    assert isolation_for(config.mappings.values(), {})["fn"] == ("thread", None)


def test_only_enabled_in_process_python_functions_take_part(tmp_path: Path) -> None:
    codes = {name: write_code(tmp_path / f"fn_{name}", app_returning(name)) for name in "abc"}
    config = settings(
        a={"handler": "app.lambda_handler", "code_path": codes["a"]},
        b={"handler": "app.lambda_handler", "code_path": codes["b"], "enabled": False},
        c={"handler": "app.lambda_handler", "code_path": codes["c"], "isolation": "process"},
    )
    assert isolation_for(config.mappings.values()) == {
        "a": ("thread", None),
        "b": ("thread", None),
        "c": ("process", None),
    }


async def test_an_environment_still_needs_isolation_process_said_outright(tmp_path: Path) -> None:
    """Moving to worker processes is Sluiceway's choice, not the user's: ENVIRONMENT keeps its
    rule rather than silently applying to a function that happened to move."""
    codes = {name: write_code(tmp_path / f"fn_{name}", app_returning(name)) for name in "ab"}
    config = settings(
        a={"handler": "app.lambda_handler", "code_path": codes["a"], "environment": {"X": "1"}},
        b={"handler": "app.lambda_handler", "code_path": codes["b"]},
    )
    assert isolation_for(config.mappings.values())["a"][0] == "process"
    with pytest.raises(TargetError, match="SLUICEWAY_MAPPINGS__A__ENVIRONMENT"):
        build_target(config.mappings["a"], config)


# ---------------------------------------------------------------- the working directory


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_the_working_directory_at_start_up_is_the_default_code_path(
    tmp_path: Path, isolation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_root = tmp_path / "task"
    write_code(
        task_root,
        {
            "app.py": """
                import os

                def handler(event, context):
                    return ["from the task root", os.environ.get("LAMBDA_TASK_ROOT")]
            """
        },
    )
    monkeypatch.chdir(task_root)
    config = settings(fn={"handler": "app.handler", "isolation": isolation})
    assert isolation_for(config.mappings.values())["fn"] == (isolation, None)
    async with built(config, "fn") as invoker:
        monkeypatch.chdir(tmp_path)  # start-up is over: the function's code stays where it was
        marker, task_root_variable = await payload(invoker)
    assert marker == "from the task root"
    if isolation == "process":  # a worker is the function's own environment: Lambda's variable
        assert task_root_variable == code_root(str(task_root))


# ---------------------------------------------------------------- reserved concurrency


def test_reserved_keys_name_the_function_never_the_handler_string() -> None:
    assert reserved_key("app.lambda_handler", "python", "orders") == "orders"
    assert reserved_key("http://orders:8080", "http", "orders") == "orders"
    arn = "arn:aws:lambda:us-east-1:123456789012:function:orders"
    assert reserved_key(f"{arn}:live", "lambda", "anything") == arn
    with pytest.raises(ValueError, match="function's name"):
        reserved_key("app.lambda_handler", "python")


async def test_two_app_lambda_handlers_each_with_reserved_concurrency_get_their_own_pool(
    tmp_path: Path,
) -> None:
    codes = {name: write_code(tmp_path / f"fn_{name}", app_returning(name)) for name in "ab"}
    fields = {"handler": "app.lambda_handler", "reserved_concurrency": 1, "isolation": "process"}
    config = settings(
        a={**fields, "code_path": codes["a"]},
        b={**fields, "code_path": codes["b"]},
        a_again={**fields, "code_path": codes["a"], "function_name": "a"},  # a's second mapping
    )
    pools = ReservedPools()
    async with (
        built(config, "a", pools) as a,
        built(config, "b", pools) as b,
        built(config, "a_again", pools) as a_again,
    ):
        assert isinstance(a, ReservedInvoker) and isinstance(b, ReservedInvoker)
        assert isinstance(a_again, ReservedInvoker)
        assert (a.pool.key, b.pool.key) == ("a", "b")
        assert a.pool is not b.pool and a_again.pool is a.pool
        assert a.pool.try_acquire()  # a's one invocation is in flight...
        assert not a_again.has_room()
        assert b.has_room()  # ...which takes nothing from b
        assert await payload(b) == "b"
        a.pool.release()
        assert await payload(a) == "a"
    # one function has one set of handler settings: a clash is refused when loading
    with pytest.raises(ConfigError, match="SLUICEWAY_MAPPINGS__CLASH__RESERVED_CONCURRENCY"):
        settings(
            a={**fields, "code_path": codes["a"]},
            clash={**fields, "code_path": codes["a"], "function_name": "a", "reserved_concurrency": 2},
        )


# ---------------------------------------------------------------- end to end


@pytest.mark.usefixtures("moto_url")
async def test_end_to_end_two_sam_style_functions_on_their_own_queues_run_their_own_code(
    tmp_path: Path,
) -> None:
    """The service as a user runs it: two in-process mappings, fn_a/app.py and fn_b/app.py (fn_a
    also with its own `handlers` and `config`), each writing what its own code says."""
    out = tmp_path / "out"
    out.mkdir()
    handler = """
        import pathlib
        {imports}

        def lambda_handler(event, context):
            for record in event["Records"]:
                path = pathlib.Path({out!r}) / record["messageId"]
                path.write_text({marker} + ":" + record["body"])
    """
    code_a = write_code(
        tmp_path / "fn_a",
        {
            "handlers/__init__.py": "MARKER = 'a-handlers'\n",
            "config.py": "SUFFIX = '-config'\n",
            "app.py": handler.format(
                imports="import config, handlers",
                out=str(out),
                marker="handlers.MARKER + config.SUFFIX",
            ),
        },
    )
    code_b = write_code(
        tmp_path / "fn_b",
        {"app.py": handler.format(imports="", out=str(out), marker="'b'")},
    )
    async with sqs_client() as sqs:
        url_a, _ = await make_queue(sqs, "fn-a")
        url_b, _ = await make_queue(sqs, "fn-b")
        await send(sqs, url_a, ["one", "two"])
        await send(sqs, url_b, ["three"])
        config = settings_for(
            {
                "a": {"source": url_a, "handler": "app.lambda_handler", "code_path": code_a},
                "b": {"source": url_b, "handler": "app.lambda_handler", "code_path": code_b},
            }
        )
        async with running(config) as service:
            assert all(isinstance(i, ProcessPoolInvoker) for i in service.invokers.values())

            async def drained() -> bool:
                counts = [await count_messages(sqs, url) for url in (url_a, url_b)]
                return counts == [(0, 0), (0, 0)] and len(list(out.iterdir())) == 3

            await eventually(drained, timeout=60)
    assert sorted(path.read_text() for path in out.iterdir()) == [
        "a-handlers-config:one",
        "a-handlers-config:two",
        "b:three",
    ]
