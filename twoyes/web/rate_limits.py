"""The rate limit on links with a token: nobody tries tokens by the thousand, and a training
room on one wifi address is never locked out.

What an attacker must do many times, and a person almost never does, is counted
per client address against TWOYES_TOKEN_RATE_LIMIT (such as "30 per minute;
300 per hour"): a token that does not open (unknown, malformed, expired) and a
form whose stamp is refused. Once an address has used that budget up, every
token route answers it 429, a real link too, so that a guesser cannot tell a
hit from a miss. A request whose link opens counts only against that link's
own budget (LINK_LIMIT): each member of a group has their own link, so twenty
people deciding from one address use twenty budgets, and none comes near.

The counts are fixed windows of the `limits` library, in the store that
TWOYES_RATELIMIT_STORAGE_URI names: memory:// (per process) or a shared one
such as redis://. Links are counted by their hash, so that no store holds a
token. A 429 says in Retry-After when the window ends.

This was Flask-Limiter, which counts with the same library; its per-request
bookkeeping (a before-request pass, limit resolution, request contexts) cost
ten times the count itself, 0.16 ms of a 0.8 ms page, so the count is made
here directly.
"""

from __future__ import annotations

import hashlib
import math
import time

from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from werkzeug.exceptions import TooManyRequests

# One person on one link reloads, presses, goes back: a few requests a minute. A coach
# deciding a dozen rounds from the overview makes two dozen. One window only: a store holds
# a count per link for a minute, not for an hour, however many links are opened.
LINK_LIMIT = "120 per minute"


class TokenRateLimit:
    """The token routes' two budgets: refusals per address, requests per link."""

    def __init__(self, limits: str, storage_uri: str) -> None:
        self.refusals = parse_many(limits)
        self.per_link = parse_many(LINK_LIMIT)
        self.counter = FixedWindowRateLimiter(storage_from_string(storage_uri))

    def check(self, address: str, token: str | None) -> None:
        """Before a token route runs: 429 when `address` has no refusals left, or when this
        link has been asked for too often; otherwise count one request of the link.

        A route without a link (asking for a coach's sign-in link) is what a guesser does
        many times: each of its requests counts against the address's tight budget."""
        if token is None:
            self.count(address)
            return
        for limit in self.refusals:
            if not self.counter.test(limit, "refused", address):
                self.refuse_more(limit, "refused", address)
        link = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        for limit in self.per_link:
            if not self.counter.hit(limit, "link", link):
                self.refuse_more(limit, "link", link)

    def count(self, key: str) -> None:
        """Count one request under `key` against the tight budget; 429 once it is used up."""
        for limit in self.refusals:
            if not self.counter.hit(limit, "refused", key):
                self.refuse_more(limit, "refused", key)

    def count_refusal(self, address: str) -> None:
        """A token that did not open, or a stamp that was refused, from `address`."""
        for limit in self.refusals:
            self.counter.hit(limit, "refused", address)

    def refuse_more(self, limit, *key: str) -> None:
        reset_at, _ = self.counter.get_window_stats(limit, *key)
        raise TooManyRequests(retry_after=max(1, math.ceil(reset_at - time.time())))
