"""`sluiceway check` for remote handlers: reach an HTTP target, describe a Lambda function.

Reaching is all that is checked: no event is sent, so checking never runs the function.
"""

from __future__ import annotations

import aiohttp
import anyio
from botocore.exceptions import BotoCoreError, ClientError
from sluiceway.config.mapping import MappingConfig
from sluiceway.config.sources import arn_region
from sluiceway.core.aws import AwsClients
from sluiceway.handlers.http_target import CONNECT_TIMEOUT, invocation_url, ssl_context

CHECK_TIMEOUT_SECONDS = 15.0


async def reach_http(mapping: MappingConfig) -> tuple[bool, str]:
    """Any HTTP answer (even 404/405 to a GET) shows the target is up; TLS is verified."""
    url = invocation_url(mapping.handler)
    ssl_option = ssl_context(mapping.ca_bundle) if url.startswith("https:") else False
    timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT_SECONDS, sock_connect=CONNECT_TIMEOUT)
    try:
        with anyio.fail_after(CHECK_TIMEOUT_SECONDS):
            connector = aiohttp.TCPConnector(ssl=ssl_option)
            session = aiohttp.ClientSession(connector=connector, timeout=timeout)
            async with session, session.get(url) as response:
                return True, f"reachable (GET answered {response.status})"
    except TimeoutError:
        return False, f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"
    except aiohttp.ClientError as exc:
        return False, f"{type(exc).__name__}: {exc}"


async def reach_lambda(mapping: MappingConfig, clients: AwsClients) -> tuple[bool, str]:
    """GetFunction on the (qualified) ARN: it exists and the credentials may see it."""
    try:
        with anyio.fail_after(CHECK_TIMEOUT_SECONDS):
            client = await clients.client("lambda", region=arn_region(mapping.handler))
            response = await client.get_function(FunctionName=mapping.handler)
    except TimeoutError:
        return False, f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return False, f"{error.get('Code', '')}: {error.get('Message', exc)}"
    except BotoCoreError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    configuration = response.get("Configuration", {})
    return True, (
        f"{configuration.get('State', 'Active')}, version {configuration.get('Version', '?')}, "
        f"timeout {configuration.get('Timeout', '?')}s"
    )
