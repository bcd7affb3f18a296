"""The `context` argument, with the fields and types of Lambda's Python runtime.

Handlers written for Lambda read these fields (Powertools logs several of them), so types match
the reference runtime exactly: `memory_limit_in_mb` is a string, `identity` is always an object,
`client_context` is None when the caller sent none.
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime
from random import getrandbits


def partition_for(region: str) -> str:
    """The ARN partition a region belongs to."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def function_arn(region: str, account: str, function_name: str) -> str:
    """The unqualified function ARN Lambda passes as `invoked_function_arn`."""
    return f"arn:{partition_for(region)}:lambda:{region}:{account}:function:{function_name}"


def new_request_id() -> str:
    """A random version-4 UUID, as Lambda's request ids are, for a third of `uuid.uuid4()`'s cost
    (no system call per invocation); `random` is reseeded in every forked process."""
    n = getrandbits(128) & ~(0xC000 << 48) | (0x8000 << 48)
    n = n & ~(0xF000 << 64) | (4 << 76)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_log_stream_name(function_version: str = "$LATEST") -> str:
    """A log stream name in Lambda's format: one per execution environment."""
    return f"{datetime.now(UTC):%Y/%m/%d}/[{function_version}]{uuid.uuid4().hex}"


class CognitoIdentity:
    """Lambda always sets `context.identity`; both ids are None outside Cognito-authorised calls."""

    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(
        self, cognito_identity_id: str | None = None, cognito_identity_pool_id: str | None = None
    ) -> None:
        self.cognito_identity_id = cognito_identity_id
        self.cognito_identity_pool_id = cognito_identity_pool_id

    def __repr__(self) -> str:
        return (
            f"CognitoIdentity([cognito_identity_id={self.cognito_identity_id},"
            f"cognito_identity_pool_id={self.cognito_identity_pool_id}])"
        )


class LambdaContext:
    """One invocation's context; the remaining time counts down from the invocation's start."""

    __slots__ = (
        "_deadline",
        "aws_request_id",
        "client_context",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
        "tenant_id",
    )

    def __init__(
        self,
        *,
        aws_request_id: str,
        function_name: str,
        timeout: float,
        memory_limit_in_mb: int | str = 128,
        region: str = "us-east-1",
        account: str = "000000000000",
        log_stream_name: str | None = None,
        function_version: str = "$LATEST",
        started: float | None = None,
    ) -> None:
        """`timeout` is the function timeout in seconds; `started` a `time.monotonic()` reading."""
        self.aws_request_id = aws_request_id
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = function_arn(region, account, function_name)
        self.memory_limit_in_mb = str(memory_limit_in_mb)
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name or new_log_stream_name(function_version)
        self.identity = CognitoIdentity()
        self.client_context: object | None = None
        self.tenant_id: str | None = None
        self._deadline = (time.monotonic() if started is None else started) + timeout

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until the function timeout, never negative (as Lambda's runtime clamps)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def log(self, msg: str) -> None:
        """Write to the function's log, as Lambda's `context.log` does without a log handler."""
        sys.stdout.write(str(msg))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},"
            f"log_group_name={self.log_group_name},"
            f"log_stream_name={self.log_stream_name},"
            f"function_name={self.function_name},"
            f"memory_limit_in_mb={self.memory_limit_in_mb},"
            f"function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn},"
            f"client_context={self.client_context},"
            f"identity={self.identity},"
            f"tenant_id={self.tenant_id}])"
        )
