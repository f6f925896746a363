"""API keys: who is calling. Each key is its own tenant; without keys everyone is "local"."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from fastapi import Request

from .errors import Unauthorized

__all__ = ["KeyRing"]


class KeyRing:
    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def owner(self, request: Request) -> str:
        """The tenant id of the request's bearer key: a hash, so keys never reach the database."""
        if not self._keys:
            return "local"
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
        presented = token.strip().encode()
        # Compare against every key so timing does not tell which prefix matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        if not matched:
            raise Unauthorized("Incorrect API key provided.")
        return hashlib.sha256(presented).hexdigest()[:32]
