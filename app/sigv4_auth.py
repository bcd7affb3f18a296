"""SigV4 verification for the Invoke API, with botocore's own signer.

An SDK signs each request with an access key; we look its secret up in SLUICEWAY_API__KEYS,
rebuild the request from exactly the headers the client signed, let botocore's `SigV4Auth`
compute the signature for the client's own timestamp and credential scope, and compare. Nothing
of SigV4 is written here but parsing the Authorization header.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

MAX_SKEW_SECONDS = 300
"""AWS refuses a signature more than 5 minutes from its clock."""
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request,\s*SignedHeaders=(?P<headers>[^,\s]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


@dataclass(frozen=True)
class AuthFailure:
    """Why a request is refused, in Lambda's words: 403 with this error type and message."""

    error_type: str
    message: str


@dataclass(frozen=True)
class SignedRequest:
    """What the signature covers, as received."""

    method: str
    url: str
    """scheme://host/path?query, with the path as sent (percent-encoded)."""
    headers: dict[str, str]
    body: bytes


def verify(
    request: SignedRequest, keys: dict[str, str], now: datetime | None = None
) -> AuthFailure | None:
    """None when `request` is signed by one of `keys`; otherwise the reason, as Lambda gives it."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    header = headers.get("authorization")
    if not header:
        return AuthFailure("MissingAuthenticationTokenException", "Missing Authentication Token")
    match = _AUTHORIZATION.match(header.strip())
    if match is None:
        return AuthFailure(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
            "(AWS4-HMAC-SHA256).",
        )
    secret = keys.get(match["key"])
    if secret is None:
        return AuthFailure(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    stamp = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(stamp, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        return AuthFailure("IncompleteSignatureException", "X-Amz-Date is missing or malformed.")
    clock = now or datetime.now(UTC)
    if abs((clock - signed_at).total_seconds()) > MAX_SKEW_SECONDS or stamp[:8] != match["date"]:
        return AuthFailure(
            "InvalidSignatureException",
            f"Signature expired: {stamp} is now earlier than "
            f"{clock.strftime(SIGV4_TIMESTAMP)} - 5 min.",
        )
    signed = match["headers"].split(";")
    if "host" not in signed or any(name not in headers for name in signed):
        return AuthFailure("IncompleteSignatureException", "A signed header is missing.")
    expected = _signature(request, {name: headers[name] for name in signed}, match, secret, stamp)
    if not hmac.compare_digest(expected, match["signature"]):
        return AuthFailure(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service "
            "documentation for details.",
        )
    return None


def _signature(
    request: SignedRequest, headers: dict[str, str], match: re.Match[str], secret: str, stamp: str
) -> str:
    aws_request = AWSRequest(
        method=request.method, url=request.url, headers=headers, data=request.body
    )
    aws_request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(match["key"], secret), match["service"], match["region"])
    canonical = signer.canonical_request(aws_request)
    return str(signer.signature(signer.string_to_sign(aws_request, canonical), aws_request))
