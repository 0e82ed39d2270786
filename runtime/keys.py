"""API keys: which of the configured keys a caller supplied, compared in constant time."""

from __future__ import annotations

import hmac

from runtime.errors import Unauthorized


def match_key(keys: list[bytes], supplied: str | None, carrier: str) -> int:
    """The index of `supplied` among `keys`, -1 when no keys are set; `Unauthorized` (401) when it is missing or
    matches none. `carrier` names where the protocol carries the key, for the message."""
    if not keys:
        return -1
    if supplied is None:
        raise Unauthorized(f"missing {carrier}")
    candidate = supplied.encode()
    matched = -1
    for i, key in enumerate(keys):  # no early exit: the time taken does not depend on which key matches
        if hmac.compare_digest(candidate, key):
            matched = i
    if matched < 0:
        raise Unauthorized("invalid API key")
    return matched
