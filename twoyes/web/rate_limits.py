"""The rate limit on links with a token: nobody tries tokens by the thousand.

Every route that takes a token shares one budget per client address
(TWOYES_TOKEN_RATE_LIMIT, such as "30 per minute; 300 per hour"), counted in
fixed windows by the `limits` library in the store that
TWOYES_RATELIMIT_STORAGE_URI names: memory:// (per process) or a shared one
such as redis://. A request over budget gets the 429 page.

This was Flask-Limiter, which counts with the same library; its per-request
bookkeeping (a before-request pass, limit resolution, request contexts) cost
ten times the count itself, 0.16 ms of a 0.8 ms page, so the count is made
here directly.
"""

from __future__ import annotations

from flask import abort
from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter


class TokenRateLimit:
    """One budget per client address for the token routes (see context.limit_tokens)."""

    def __init__(self, limits: str, storage_uri: str) -> None:
        self.limits = parse_many(limits)
        self.counter = FixedWindowRateLimiter(storage_from_string(storage_uri))

    def count(self, address: str) -> None:
        """Count one request from `address`; abort with 429 once a limit is used up."""
        for limit in self.limits:
            if not self.counter.hit(limit, "tokens", address):
                abort(429)
