"""The `sluiceway` command: run, check, status, demo, produce, import-sam, redrive."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import anyio
from sluiceway.app.startup import preflight, version
from sluiceway.config import ConfigError, Settings, load_settings
from sluiceway.core.errors import SluicewayError
from sluiceway.core.logs import configure_logging
from sluiceway.core.telemetry import setup_tracing
from sluiceway.core.telemetry import shutdown as shutdown_tracing

README = "README.md (sections Configuration and Observability)"

SETTINGS_HELP = f"""\
configuration (environment variables; a file can hold the same settings):
  SLUICEWAY_CONFIG_FILE                 a TOML, YAML or JSON file; variables override it
  SLUICEWAY_MAPPINGS__<NAME>__SOURCE    SQS queue ARN or URL, Kinesis stream ARN, DynamoDB
                                        stream or table ARN
  SLUICEWAY_MAPPINGS__<NAME>__HANDLER   module:function, http(s)://... or a Lambda function ARN
  SLUICEWAY_MAPPINGS__<NAME>__STARTING_POSITION
                                        streams: TRIM_HORIZON, LATEST or AT_TIMESTAMP
  SLUICEWAY_MAPPINGS__<NAME>__BATCH_SIZE, __FUNCTION_RESPONSE_TYPES, __FILTER_CRITERIA, ...
                                        the event source mapping API's names in snake_case
  SLUICEWAY_HTTP__PORT                  /healthz, /readyz, /status, /metrics (default 8080;
                                        0 picks a free port)
  SLUICEWAY_CHECKPOINTS__BACKEND        streams: sqlite (default), memory or dynamodb
  SLUICEWAY_LOG_LEVEL, SLUICEWAY_LOG_FORMAT
                                        INFO; text on a terminal, json lines otherwise
  AWS_REGION, AWS_ENDPOINT_URL          the default region; an endpoint (an emulator);
                                        credentials come from the usual AWS chain
  OTEL_EXPORTER_OTLP_ENDPOINT           send traces and metrics by OTLP

Every setting, its default and its rule: {README}."""

DEMO_HELP = f"""\
The demo builds its own configuration on an embedded emulator; it reads only
SLUICEWAY_HTTP__PORT (default 0: a free port) and SLUICEWAY_LOG_LEVEL (default WARNING).
The settings for your own mappings: {README}."""

IMPORT_SAM_HELP = """\
The output holds SLUICEWAY_MAPPINGS__<NAME>__... settings: load a .toml file with
SLUICEWAY_CONFIG_FILE, or a .env file as environment variables. What each one means:
README.md (sections Migrating from Lambda and Configuration)."""


def _load_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:  # its text starts "invalid configuration (N problems):"
        print(f"sluiceway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _run(_: argparse.Namespace) -> int:
    from sluiceway.app.service import Service

    settings = _load_or_exit()
    configure_logging(settings.log_level, settings.log_format, log_bodies=settings.log_bodies)
    preflight(settings)
    setup_tracing(trace_records=settings.trace_records)
    try:
        anyio.run(Service(settings).run)
    finally:
        shutdown_tracing()  # flush buffered spans, after the loop
    return _leave_stuck_handlers(0)


def _leave_stuck_handlers(code: int) -> int:
    """Exit at once if handler threads still run: everything else is released or checkpointed,
    and their calls were abandoned. Their threads are daemons, but a daemon thread that writes
    while the interpreter finalises can abort it, so the process ends here instead."""
    from sluiceway.handlers.environments import busy_threads

    stuck = busy_threads()
    if not stuck:
        return code
    logging.getLogger("sluiceway.app").warning(
        "exiting with %d handler call(s) still running in their threads; "
        "ISOLATION=process stops handlers that hang",
        stuck,
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _check(_: argparse.Namespace) -> int:
    from sluiceway.app.check import run_checks

    settings = _load_or_exit()
    configure_logging("WARNING", "text")
    preflight(settings)
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


def _produce(args: argparse.Namespace) -> int:
    from sluiceway.app.produce import ProduceOptions, produce, producer_environment

    settings = _load_or_exit()
    configure_logging(settings.log_level, "text")
    options = ProduceOptions(
        rate=args.rate,
        duration=args.duration,
        create=args.create,
        create_only=args.create_only,
        withhold_destinations=args.withhold_destinations,
    )
    if not options.create_only:
        setup_tracing(producer_environment(os.environ))
    try:
        return anyio.run(produce, settings, options)
    finally:
        shutdown_tracing()


def _import_sam(args: argparse.Namespace) -> int:
    from sluiceway.app.sam_import import write_import

    return write_import(args)


def _redrive(args: argparse.Namespace) -> int:
    from sluiceway.app.redrive import RedriveOptions, redrive

    settings = _load_or_exit()
    configure_logging("WARNING", "text", log_bodies=settings.log_bodies)
    options = RedriveOptions(args.mapping, args.source, args.max, args.dry_run)
    tally = anyio.run(redrive, settings, options)
    return 0 if tally.ok else 1


def _add_redrive(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    redrive = sub.add_parser(
        "redrive",
        help="send a mapping's DLQ back to its queue, or its stream failures back through its "
        "function",
    )
    redrive.add_argument("mapping", help="the mapping's name")
    redrive.add_argument(
        "--from",
        dest="source",
        metavar="DLQ_OR_DESTINATION_ARN",
        help="default: the queue's DLQ (SQS), the on-failure destination (streams)",
    )
    redrive.add_argument(
        "--max", type=int, metavar="N", help="at most N messages (SQS) or failure records"
    )
    redrive.add_argument("--dry-run", action="store_true", help="say what would happen, do nothing")
    redrive.set_defaults(func=_redrive)



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


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0")
    return value


def _subcommand(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, epilog: str
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluiceway",
        description="AWS Lambda's event source mappings (SQS, Kinesis, DynamoDB Streams) as a "
        "service.",
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sluiceway {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _subcommand(
        sub, "run", "run every configured mapping until SIGTERM or SIGINT", SETTINGS_HELP
    ).set_defaults(func=_run)
    _subcommand(
        sub,
        "check",
        "validate the configuration, load every handler and reach every source, target and "
        "destination, without invoking or sending anything",
        SETTINGS_HELP,
    ).set_defaults(func=_check)
    status = _subcommand(
        sub,
        "status",
        "mappings, shards, owners, checkpoints and leases of a running deployment",
        SETTINGS_HELP,
    )
    status.add_argument("--url", help="a replica's HTTP address (default: this host's port)")
    status.set_defaults(func=_status)
    demo = _subcommand(
        sub, "demo", "everything on an embedded AWS emulator, with a tally", DEMO_HELP
    )
    demo.add_argument("--keep-running", action="store_true", help="keep serving after the tally")
    demo.add_argument("--messages", type=int, default=60, help="messages to send per queue")
    demo.add_argument(
        "--timeout", type=float, default=120.0, help="give up after this many seconds"
    )
    demo.set_defaults(func=_demo)
    produce = sub.add_parser(
        "produce",
        help="send a steady mix of test events (good, filtered, flaky, poison) to every "
        "mapping's source on an emulator, with trace context",
        description="Reads the same configuration as `run` (SLUICEWAY_MAPPINGS__*) and sends each "
        "distinct source its mix: orders to a standard queue, ledger entries to a FIFO queue, "
        "clicks to a Kinesis stream, account changes to a DynamoDB table. Runs only against an "
        "emulator (AWS_ENDPOINT_URL). Traces by the standard OTEL_* variables, as service "
        "sluiceway-producer. See the README's 'The compose stack'.",
    )
    produce.add_argument("--rate", type=_positive, default=5.0, help="events a second per source")
    produce.add_argument("--duration", type=_positive, help="stop after this many seconds")
    produce.add_argument(
        "--create",
        action="store_true",
        help="first create each source (queues with a DLQ) and on-failure destination",
    )
    produce.add_argument(
        "--create-only", action="store_true", help="create them as --create does, then exit"
    )
    produce.add_argument(
        "--withhold-destinations",
        type=_positive,
        default=0.0,
        metavar="SECONDS",
        help="create the on-failure destinations this long after sending starts, so the first "
        "deliveries are refused and retried (with --create-only: leave them to a later --create)",
    )
    produce.set_defaults(func=_produce)
    sam = _subcommand(
        sub,
        "import-sam",
        "write mappings for a SAM/CloudFormation template's event sources",
        IMPORT_SAM_HELP,
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
    _add_redrive(sub)
    _add_invoke(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SluicewayError as exc:  # a condition we can name: one line, no traceback
        print(f"sluiceway: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:  # raised inside a task group
        named, rest = group.split(SluicewayError)
        if named is None or rest is not None:
            raise
        for line in dict.fromkeys(str(exc) for exc in _leaves(named)):
            print(f"sluiceway: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the service's own signal handling started
        return 130


def _leaves(group: BaseExceptionGroup[SluicewayError]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


if __name__ == "__main__":
    sys.exit(main())
