"""Values the service knows to be secret, masked wherever text leaves the process.

One registry (`known_secrets`) holds them: the credentials the service resolved through the AWS
credential chain, every mapping's `ENVIRONMENT` values, and whatever else is registered later
(API keys). Logs (`core.logs`), `/status`, `/metrics`, span statuses and failure records pass text
through it, so a handler's error message that quotes a secret is written with `[redacted]` in its
place.

Values shorter than `MIN_LENGTH` are not registered (a variable such as `STAGE=prod` would
otherwise mask an ordinary word everywhere), except for variables whose name says they hold a
secret (`…PASSWORD`, `…TOKEN`, `…SECRET`, `…KEY`), registered from `MIN_SECRET_NAMED_LENGTH`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import anyio

log = logging.getLogger(__name__)

MASK = "[redacted]"
MIN_LENGTH = 8
MIN_SECRET_NAMED_LENGTH = 4
CREDENTIALS_TIMEOUT_SECONDS = 10.0
_SECRET_NAME = re.compile(r"secret|password|passwd|token|credential|key|auth", re.I)


class KnownSecrets:
    """The values to mask; safe to read from any thread, added to rarely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()
        """Longest first, so a secret that contains another is masked whole."""

    def __len__(self) -> int:
        return len(self._values)

    def add(self, value: str | None, *, min_length: int = MIN_LENGTH) -> None:
        """Register `value` (ignored when empty or shorter than `min_length`)."""
        if not value or len(value) < min_length:
            return
        with self._lock:
            if value not in self._values:
                self._values = tuple(sorted((*self._values, value), key=len, reverse=True))

    def add_environment(self, environment: Mapping[str, str]) -> None:
        """Every value of a handler's environment variables (see the module's length rule)."""
        for name, value in environment.items():
            secret_named = _SECRET_NAME.search(name) is not None
            self.add(value, min_length=MIN_SECRET_NAMED_LENGTH if secret_named else MIN_LENGTH)

    def clear(self) -> None:
        with self._lock:
            self._values = ()

    @property
    def values(self) -> tuple[str, ...]:
        return self._values

    def mask(self, text: str) -> str:
        """`text` with every known secret replaced by `[redacted]`."""
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def mask_value(self, value: Any) -> Any:
        """A JSON-like value (dicts, lists, strings) with every string masked."""
        if not self._values:
            return value
        return _mask_tree(value, self.mask)


def _mask_tree(value: Any, mask: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: _mask_tree(item, mask) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_tree(item, mask) for item in value]
    return value


known_secrets = KnownSecrets()
"""The process's registry: every output path masks through it."""


_GRAM = 8
"""Fragments are first matched by their first `_GRAM` characters against every `_GRAM`-character
slice of the text: a set lookup each, so thousands of bodies cost little more than a few."""


def mask_fragments(text: str, fragments: Iterable[str], limit: int) -> str:
    """`text` cut to `limit` characters, with every occurrence of a fragment masked, including
    one the cut would leave half visible (found in the text before cutting)."""
    candidates = [f for f in fragments if f]
    if len(candidates) > _GRAM:
        longest = max(len(f) for f in candidates)
        region = text[: limit + longest - 1]
        grams = {region[i : i + _GRAM] for i in range(len(region) - _GRAM + 1)}
        candidates = [f for f in candidates if len(f) < _GRAM or f[:_GRAM] in grams]
    spans: list[tuple[int, int]] = []
    for fragment in candidates:
        # An occurrence that starts before the cut lies within text[: limit + len - 1].
        end = min(len(text), limit + len(fragment) - 1)
        start = text.find(fragment, 0, end)
        while start != -1 and start < limit:
            spans.append((start, start + len(fragment)))
            start = text.find(fragment, start + len(fragment), end)
    spans.sort()
    out: list[str] = []
    position = 0
    for start, stop in spans:
        if start < position:  # overlaps the mask just written
            position = max(position, stop)
            continue
        out += (text[position:start], MASK)
        position = stop
    if position < limit:
        out.append(text[position:limit])
    return "".join(out) + ("…" if len(text) > max(limit, position) else "")


async def register_aws_credentials(session: Any) -> None:
    """Register the secret access key and session token of the AWS credential chain, as the
    service's clients resolve them (`session`: their aiobotocore session). A chain that cannot be
    resolved is left to the clients, which report it on their first call."""
    try:
        with anyio.fail_after(CREDENTIALS_TIMEOUT_SECONDS):
            credentials = await session.get_credentials()
            if credentials is None:
                return
            frozen = await credentials.get_frozen_credentials()
    except Exception as exc:
        log.debug("credentials not resolved for masking: %s", type(exc).__name__)
        return
    known_secrets.add(frozen.secret_key)
    known_secrets.add(frozen.token)
