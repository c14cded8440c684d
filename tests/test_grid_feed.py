"""The grid price from an HTTP JSON feed (`maxwell.economy.gridfeed`): polled off the tick, the
last good value kept with its age, anything else refused and logged; and a real daemon on a real
loopback server."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import wait_until
from maxwell.economy.gridfeed import (
    FALLBACK_PRICE,
    MAX_BODY_BYTES,
    FeedError,
    FeedSpec,
    HttpGridFeed,
    parse_feed_spec,
    price_from,
)
from maxwell.economy.price import parse_grid
from maxwell.errors import UsageError
from maxwell.node.config import NodeConfig, NodeConfigError
from maxwell.node.daemon import NodeDaemon


@pytest.mark.parametrize(
    "body, field, price",
    [(b'{"price": 0.25}', "price", 0.25), (b'{"data": {"eur": 3}}', "data.eur", 3.0)],
)
def test_a_good_answer_gives_its_price(body: bytes, field: str, price: float) -> None:
    assert price_from(body, field) == price


@pytest.mark.parametrize(
    "body, says",
    [
        (b"<html>", "not JSON"),
        (b'{"cost": 1}', "no field 'price'"),
        (b'{"price": "1.0"}', "not a number"),
        (b'{"price": true}', "not a number"),
        (b'{"price": -0.1}', "not a price"),
        (b'{"price": NaN}', "not a price"),
        (b'{"price": 1e300}', "not a price"),
        (b"[1, 2]", "no field"),
    ],
)
def test_anything_else_gives_no_price(body: bytes, says: str) -> None:
    with pytest.raises(FeedError, match=says):
        price_from(body, "price")


def test_the_spec_is_an_http_url_with_an_optional_field() -> None:
    assert parse_feed_spec("https://grid.example/now#data.eur") == FeedSpec(
        "https://grid.example/now", "data.eur"
    )
    assert parse_feed_spec("http://127.0.0.1:8080/p").field == "price"
    for bad in ("ftp://host/p", "http:///p", "http://host/p#a..b"):
        with pytest.raises(UsageError):
            parse_feed_spec(bad)
    feed = parse_grid("http://127.0.0.1:9/p", poll_s=2.0, timeout_s=0.5)
    assert isinstance(feed, HttpGridFeed) and (feed.poll_s, feed.timeout_s) == (2.0, 0.5)


class Feed:
    """A fake feed: its answers and a clock the test moves."""

    def __init__(self) -> None:
        self.answers: list[bytes | Exception] = []
        self.now = 100.0

    def fetch(self, url: str, timeout_s: float) -> bytes:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_the_last_good_price_is_kept_with_its_age_and_failures_are_counted() -> None:
    fake = Feed()
    feed = HttpGridFeed(FeedSpec("http://x/p", "price"), fetch=fake.fetch, clock=lambda: fake.now)
    assert (feed.at(0.0), feed.age_s()) == (FALLBACK_PRICE, None)  # no reading yet
    fake.answers = [b'{"price": 0.3}', TimeoutError("timed out"), b'{"price": "x"}']
    assert feed.poll_once() and feed.at(0.0) == 0.3 and feed.age_s() == 0.0
    fake.now += 60
    assert not feed.poll_once() and not feed.poll_once()
    assert (feed.at(0.0), feed.age_s(), feed.failures) == (0.3, 60.0, 2)
    assert feed.last_error is not None and "not a number" in feed.last_error
    fake.answers = [b'{"price": 0.5}']
    assert feed.poll_once() and (feed.at(0.0), feed.age_s(), feed.failures) == (0.5, 0.0, 0)


def test_the_tick_never_waits_for_the_feed() -> None:
    """`at()` answers the last price while a poll hangs on the network."""
    inside, release = threading.Event(), threading.Event()

    def hanging(url: str, timeout_s: float) -> bytes:
        inside.set()
        release.wait(30)
        return b'{"price": 2.0}'

    feed = HttpGridFeed(FeedSpec("http://x/p", "price"), fetch=hanging)
    polling = threading.Thread(target=feed.poll_once)
    polling.start()
    assert inside.wait(30)
    assert feed.at(0.0) == FALLBACK_PRICE  # answered while the poll is stuck
    release.set()
    polling.join(30)
    assert feed.at(0.0) == 2.0


def test_the_feed_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(NodeConfigError, match="ftp"):
        NodeConfig(state_dir=tmp_path, grid="ftp://host/p")
    with pytest.raises(NodeConfigError, match="grid_poll_s must be a finite number above 0"):
        NodeConfig(state_dir=tmp_path, grid_poll_s=0.0)
    with pytest.raises(NodeConfigError, match="grid_timeout_s must be a finite number above 0"):
        NodeConfig(state_dir=tmp_path, grid_timeout_s=float("inf"))


class Tariff:
    """A real HTTP server on loopback serving `{"price": <value>}` at /price."""

    def __init__(self) -> None:
        self.value: object = 2.5
        self.hits = 0
        tariff = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                tariff.hits += 1
                body = json.dumps({"price": tariff.value}).encode()
                if self.path == "/big":
                    body = b" " * (MAX_BODY_BYTES + 1)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def tariff() -> Iterator[Tariff]:
    served = Tariff()
    try:
        yield served
    finally:
        served.stop()


def test_a_daemon_prices_by_a_real_feed_and_keeps_the_last_price_when_it_goes(
    tmp_path: Path, tariff: Tariff
) -> None:
    config = NodeConfig(
        state_dir=tmp_path / "state", tick_s=0.1, cgroup="none", grid=f"{tariff.url}/price",
        grid_poll_s=0.05, grid_timeout_s=1.0,
    )  # fmt: skip
    daemon = NodeDaemon(config)
    try:
        assert tariff.hits >= 1  # asked once at start, before the first quote
        assert daemon.price().grid == 2.5
        assert daemon.price().grid_source == f"http feed {tariff.url}/price#price"
        tariff.value = 4.0

        def priced_at_4() -> bool:
            daemon.tick_once()
            return daemon.price().grid == 4.0

        wait_until(priced_at_4, what="the daemon to price by the feed's new value")
        tariff.stop()  # the feed goes away: the last good price stays, and ages
        wait_until(lambda: (daemon.price().grid_age_s or 0.0) > 0.3, what="the last reading to age")
        daemon.tick_once()
        assert daemon.price().grid == 4.0
    finally:
        daemon.shutdown(kill_agents=True)


def test_an_oversized_answer_is_refused(tariff: Tariff) -> None:
    feed = HttpGridFeed(parse_feed_spec(f"{tariff.url}/big"), timeout_s=5.0)
    assert not feed.poll_once()
    assert feed.last_error is not None and "over" in feed.last_error
