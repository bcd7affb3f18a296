"""The `sluiceway` command: run, check, demo, import-sam."""

from __future__ import annotations

import argparse
import sys

import anyio
from sluiceway.config import ConfigError, load_settings
from sluiceway.core.errors import SluicewayError
from sluiceway.core.logs import configure_logging
from sluiceway.core.telemetry import setup_tracing
from sluiceway.core.telemetry import shutdown as shutdown_tracing


def _load_or_exit():  # type: ignore[no-untyped-def]
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"sluiceway: invalid configuration\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _run(_: argparse.Namespace) -> int:
    from sluiceway.app.service import Service

    settings = _load_or_exit()
    configure_logging(settings.log_level, settings.log_format, log_bodies=settings.log_bodies)
    if not settings.mappings and not settings.functions:
        print(
            "sluiceway: nothing to run: no mappings (SLUICEWAY_MAPPINGS__<NAME>__SOURCE and "
            "__HANDLER) and no functions (SLUICEWAY_FUNCTIONS__<NAME>__HANDLER) are configured",
            file=sys.stderr,
        )
        return 2
    setup_tracing(trace_records=settings.trace_records)
    try:
        anyio.run(Service(settings).run)
    finally:
        shutdown_tracing()  # flush buffered spans, after the loop
    return 0


def _check(_: argparse.Namespace) -> int:
    from sluiceway.app.check import run_checks

    settings = _load_or_exit()
    configure_logging("WARNING", "text")
    print(
        f"configuration ok: {len(settings.mappings)} mapping(s), "
        f"{len(settings.functions)} function(s), {len(settings.schedules)} schedule(s)"
    )
    results = anyio.run(run_checks, settings)
    for result in results:
        print(result.line())
    return 0 if all(r.ok for r in results) else 1


def _status(args: argparse.Namespace) -> int:
    from sluiceway.app.status import gather_status, render

    settings = _load_or_exit()
    url = args.url or (f"http://127.0.0.1:{settings.http.port}" if settings.http.enabled else None)
    report = anyio.run(gather_status, settings, url)
    print(render(report))
    return 0 if report.found_anything else 1


def _demo(args: argparse.Namespace) -> int:
    from sluiceway.app.demo import run_demo

    return run_demo(keep_running=args.keep_running, messages=args.messages, timeout=args.timeout)


def _import_sam(args: argparse.Namespace) -> int:
    from sluiceway.app.sam_import import write_import

    return write_import(args)


def _invoke(args: argparse.Namespace) -> int:
    from sluiceway.app.invoke_cli import invoke_local, invoke_remote, read_payload

    payload = read_payload(args.payload)
    if args.local:
        settings = _load_or_exit()
        configure_logging("WARNING", "text")
        return invoke_local(args, settings, payload)
    return invoke_remote(args, _load_or_exit(), payload)


def _add_invoke(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    invoke = sub.add_parser(
        "invoke", help="invoke a function of a running service (or in this process with --local)"
    )
    invoke.add_argument("function", help="the function's name or ARN")
    invoke.add_argument("--payload", help="the event: JSON, or @FILE to read it from a file")
    invoke.add_argument(
        "--invocation-type",
        choices=["RequestResponse", "Event", "DryRun"],
        default="RequestResponse",
    )
    invoke.add_argument("--log-type", choices=["None", "Tail"], default="None")
    invoke.add_argument("--url", help="the service's HTTP address (default: this host's port)")
    invoke.add_argument(
        "--local", action="store_true", help="run the function in this process, not a service"
    )
    invoke.set_defaults(func=_invoke)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluiceway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run every configured mapping").set_defaults(func=_run)
    sub.add_parser("check", help="validate config and reach every source").set_defaults(func=_check)
    status = sub.add_parser(
        "status", help="mappings, shards, owners, checkpoints and leases of a running deployment"
    )
    status.add_argument("--url", help="a replica's HTTP address (default: this host's port)")
    status.set_defaults(func=_status)
    demo = sub.add_parser("demo", help="everything on an embedded AWS emulator, with a tally")
    demo.add_argument("--keep-running", action="store_true", help="keep serving after the tally")
    demo.add_argument("--messages", type=int, default=60, help="messages to send per queue")
    demo.add_argument(
        "--timeout", type=float, default=120.0, help="give up after this many seconds"
    )
    demo.set_defaults(func=_demo)
    sam = sub.add_parser(
        "import-sam", help="write mappings for a SAM/CloudFormation template's event sources"
    )
    sam.add_argument("template", help="template file (YAML or JSON)")
    sam.add_argument("--output", "-o", help="file to write (.toml, or .env for an env file)")
    sam.add_argument("--format", choices=["toml", "env"], help="default: from --output, else toml")
    sam.add_argument("--region", default="us-east-1", help="AWS::Region in ARNs")
    sam.add_argument("--account", default="123456789012", help="AWS::AccountId in ARNs")
    sam.add_argument("--stack-name", default="sluiceway", help="AWS::StackName")
    sam.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a template parameter value (repeatable)",
    )
    sam.set_defaults(func=_import_sam)
    _add_invoke(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SluicewayError as exc:  # a condition we can name: one line, no traceback
        print(f"sluiceway: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
