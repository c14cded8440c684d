"""A grid price read from an HTTP JSON feed (`maxwell daemon --grid http://HOST/PATH#FIELD`).

Rules:

- The feed is polled in a thread of its own, every `poll_s` (60), each request bounded by
  `timeout_s` (5): the tick never waits for the network. `at()` answers the last good value at
  once.
- A good answer is a JSON object whose `FIELD` (a dotted path, `price` by default) is a finite
  number between 0 and `MAX_GRID_PRICE` $J per J, in a body of at most `MAX_BODY_BYTES`.
  Anything else (an error status, a timeout, a refused connection, malformed JSON, a missing or
  absurd number) keeps the last good value, is logged once per kind of failure in a row, and
  counted (`failures`, `last_error`).
- Until the first good answer the price is `FALLBACK_PRICE` (1.0, the default constant grid),
  and `age_s` is None: the read model says so (`PriceInfo.grid_age_s`), and the daemon logs it.
- The feed's clock is injected (`clock`, monotonic seconds) and so is the request (`fetch`), so
  the rules above are tested without a network; a real server on loopback tests the rest.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from maxwell.errors import UsageError

log = logging.getLogger(__name__)

FALLBACK_PRICE = 1.0
MAX_GRID_PRICE = 1e6  # $J per J: far above any tariff; more is a broken feed
MAX_BODY_BYTES = 64 * 1024
DEFAULT_POLL_S = 60.0
DEFAULT_TIMEOUT_S = 5.0

Fetch = Callable[[str, float], bytes]  # (url, timeout_s) -> the body; raises on failure


class FeedError(Exception):
    """An answer from the feed that gives no price (the message says why)."""


def http_fetch(url: str, timeout_s: float) -> bytes:
    """GET `url`; the body (at most `MAX_BODY_BYTES`), or an `OSError`/`FeedError`."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        body: bytes = response.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise FeedError(f"the answer is over {MAX_BODY_BYTES} bytes")
    return body


def price_from(body: bytes, field: str) -> float:
    """The price at `field` (dotted) in a JSON body; a `FeedError` says why there is none."""
    try:
        value: object = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedError(f"not JSON: {exc}") from exc
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            raise FeedError(f"no field {field!r} in the answer")
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FeedError(f"{field} is not a number: {value!r}")
    price = float(value)
    if not math.isfinite(price) or not 0.0 <= price <= MAX_GRID_PRICE:
        raise FeedError(f"{field} = {price!r} is not a price between 0 and {MAX_GRID_PRICE:g}")
    return price


@dataclass(frozen=True)
class FeedSpec:
    url: str  # without the fragment
    field: str


def parse_feed_spec(spec: str) -> FeedSpec:
    """`http[s]://HOST[:PORT]/PATH[#FIELD]` (a `UsageError` for anything else)."""
    parsed = urllib.parse.urlsplit(spec.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"--grid {spec!r}: a feed is an http:// or https:// URL")
    field = parsed.fragment or "price"
    if not all(part for part in field.split(".")):
        raise UsageError(f"--grid {spec!r}: the field after # must be a dotted name")
    return FeedSpec(urllib.parse.urlunsplit(parsed._replace(fragment="")), field)


class HttpGridFeed:
    """A `GridPrice` polled from an HTTP JSON feed (see the module)."""

    def __init__(
        self,
        spec: FeedSpec,
        *,
        poll_s: float = DEFAULT_POLL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        fetch: Fetch = http_fetch,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self._fetch = fetch
        self._clock = clock
        self._price = FALLBACK_PRICE
        self._read_at: float | None = None  # when the last good answer came (clock)
        self.failures = 0  # polls in a row that gave no price
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def at(self, t_s: float) -> float:
        """The last good price (whatever `t_s`: a feed says what the price is now)."""
        return self._price

    def age_s(self) -> float | None:
        """Seconds since the last good answer; None before the first."""
        return None if self._read_at is None else self._clock() - self._read_at

    def describe(self) -> str:
        return f"http feed {self.spec.url}#{self.spec.field}"

    def poll_once(self) -> bool:
        """Ask the feed once; whether it gave a price (kept) or not (the last one stays)."""
        try:
            price = price_from(self._fetch(self.spec.url, self.timeout_s), self.spec.field)
        except (OSError, FeedError, urllib.error.URLError, ValueError) as exc:
            error = str(exc) or type(exc).__name__
            if self.failures == 0 or error != self.last_error:
                log.warning(
                    "grid feed %s: %s; the price stays %g", self.spec.url, error, self._price
                )
            self.failures += 1
            self.last_error = error
            return False
        self._price, self._read_at = price, self._clock()
        if self.failures:
            log.info("grid feed %s answers again: %g $J/J", self.spec.url, price)
        self.failures, self.last_error = 0, None
        return True

    def start(self) -> None:
        """Poll once now (bounded by the timeout), then every `poll_s` in a thread."""
        if not self.poll_once():
            log.warning(
                "grid feed %s: no price yet; %g $J/J until it answers", self.spec.url, self._price
            )
        self._thread = threading.Thread(target=self._run, name="grid-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1.0)
