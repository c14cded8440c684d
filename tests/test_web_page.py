"""The live page (issue 15): served safely at / by the API, found by `maxwell web`, and drawn in a
real browser (Playwright driving Debian's chromium) from a real `maxwell daemon` with real agents.

The browser tests skip, saying why, where chromium or Playwright is missing; under CI
(`MAXWELL_REQUIRE_ROOT_TESTS=1`, which `.ci/run` sets as root after installing both) they fail
instead, so a green CI has run them. `MAXWELL_SAVE_SCREENSHOT=1` also copies the screenshot to
docs/images/page.png (the README's picture); otherwise it stays under pytest's tmp dir.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from fake_node import FakeNode  # first: imports starlette's test client quietly
from helpers import LOCAL, maxwell, pids_with_tag, wait_until
from maxwell.node.api import create_app
from maxwell.node.eventtext import MONEY_KEYS
from maxwell.web.routes import CONTENT_SECURITY_POLICY, PAGE_FILES

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "src" / "maxwell" / "web"
STATIC = WEB / "static"
SCREENSHOT = REPO / "docs" / "images" / "page.png"
REQUIRED = os.environ.get("MAXWELL_REQUIRE_ROOT_TESTS") == "1"


def _client() -> Any:
    from starlette.testclient import TestClient

    return TestClient(
        create_app(FakeNode(), metrics=lambda: b"maxwell_ticks_total 1\n"), base_url=LOCAL
    )


# --- serving -----------------------------------------------------------------------------------


def test_the_page_and_its_files_need_no_token_and_carry_their_type_and_policy() -> None:
    client = _client()
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert b"<title>Maxwell</title>" in page.content
    for name, (_, content_type) in PAGE_FILES.items():
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"] == content_type, name
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    sources = {d.split()[0]: d.split()[1:] for d in CONTENT_SECURITY_POLICY.split("; ")}
    assert all(value in (["'self'"], ["'none'"]) for value in sources.values()), sources
    assert sources["default-src"] == ["'self'"] and sources["frame-ancestors"] == ["'none'"]
    assert client.get("/agents").status_code == 401  # the page is public, the API is not


@pytest.mark.parametrize(
    "path",
    [
        "/static/../node/api.py",
        "/static/..%2f..%2fnode%2fapi.py",
        "/static/%2e%2e/routes.py",
        "/static/routes.py",
        "/static/vendor/uplot/LICENSE",  # served only under its fixed name
        "/static/",
        "/static/VENDORED.md",
        "/index.html",
    ],
)
def test_only_the_fixed_names_are_served(path: str) -> None:
    answer = _client().get(path)  # redirects followed: Starlette's for a trailing slash
    assert answer.status_code == 404, path
    assert answer.json()["error"].startswith("no such endpoint")


def test_the_page_asks_only_its_own_origin_by_relative_urls() -> None:
    html = (STATIC / "index.html").read_text()
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert not url.startswith(("/", "http:", "https:", "//")), url
    script = (STATIC / "maxwell.js").read_text()
    requested = re.findall(r'(?:get|getJson|fetch)\(\s*[`"]([^`"]*)', script)
    assert {"metrics", "agents", "status", "whoami", "cluster/members"} <= {
        url.split("?")[0] for url in requested
    }
    assert all(not url.startswith("/") for url in requested), requested
    assert "innerHTML" not in script and "eval(" not in script
    assert "localStorage" not in script  # the token lives for the tab alone (sessionStorage)


def test_the_page_turns_the_same_event_fields_into_dollars_of_joule_as_the_cli() -> None:
    script = (STATIC / "maxwell.js").read_text()
    found = re.search(r"MONEY_KEYS = new Set\(\[(.*?)\]\)", script, re.S)
    assert found is not None
    assert set(re.findall(r'"([a-z_]+)"', found.group(1))) == set(MONEY_KEYS)


def test_uplot_is_vendored_as_its_note_records_and_shipped_in_the_package() -> None:
    vendor = STATIC / "vendor" / "uplot"
    note = (vendor / "VENDORED.md").read_text()
    version = re.search(r"\| version \| ([0-9.]+) \(pinned\)", note)
    assert version is not None
    header = (vendor / "uPlot.iife.min.js").read_text()[:120]
    assert f"(v{version.group(1)})" in header
    assert f"uPlot {version.group(1)}" in (STATIC / "index.html").read_text()
    recorded = dict(
        (name, digest) for digest, name in re.findall(r"^ {4}([0-9a-f]{64})  (\S+)$", note, re.M)
    )
    assert set(recorded) == {"uPlot.iife.min.js", "uPlot.min.css", "LICENSE"}
    for name, digest in recorded.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (vendor / "LICENSE").read_text()
    # An installed wheel has every file the page serves: the package data's globs cover them.
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["maxwell.web"]
    shipped = {Path(p) for pattern in patterns for p in glob.glob(pattern, root_dir=WEB)}
    assert {Path("static", relative) for relative, _ in PAGE_FILES.values()} <= shipped


# --- maxwell web -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveDaemon:
    """A `maxwell daemon` process on its socket and a loopback port."""

    state: Path
    socket: str
    url: str
    token: str
    process: subprocess.Popen[str]
    tag: str  # on every agent's command line: what the teardown looks for


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _page_answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def live() -> Iterator[LiveDaemon]:
    root = Path(tempfile.mkdtemp(prefix="mxw-web-", dir="/tmp"))
    root.chmod(0o711)  # a root daemon's agents, uids of their own, pass through it
    state, port = root / "state", _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "maxwell.cli.main", "daemon", "--state", str(state),
         "--listen", f"127.0.0.1:{port}", "--cgroup", "none", "--tick", "0.2", "--kill-agents"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(
            lambda: process.poll() is not None or _page_answers(url + "metrics"),
            what="the daemon's page",
        )
        assert process.poll() is None, process.communicate()[1]
        token = (state / "admin.token").read_text().strip()
        yield LiveDaemon(state, str(state / "maxwell.sock"), url, token, process, root.name)
    finally:
        process.terminate()  # --kill-agents: it ends its agents as it stops
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        left = pids_with_tag(root.name)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
        assert left == [], f"the daemon left agents running: {left}"


def test_web_prints_the_socket_and_how_to_reach_it(live: LiveDaemon) -> None:
    shown = maxwell("web", "--state", str(live.state))
    assert shown.returncode == 0, shown.stderr
    first, hint = shown.stdout.splitlines()
    assert first == f"unix:{live.socket}"
    assert f"ssh -L 8765:{live.socket} HOST" in hint and "http://127.0.0.1:8765/" in hint
    as_json = maxwell("web", "--socket", live.socket, "--json")
    assert json.loads(as_json.stdout)["socket"] == live.socket


def test_web_prints_the_url_and_opens_it_in_the_browser(live: LiveDaemon, tmp_path: Path) -> None:
    address = live.url.removeprefix("http://").rstrip("/")
    shown = maxwell("web", "--listen-address", address)
    assert (shown.returncode, shown.stdout) == (0, live.url + "\n"), shown.stderr
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n')
    browser.chmod(stat.S_IRWXU)
    env = {**os.environ, "BROWSER": str(browser)}
    result = maxwell("web", "--listen-address", address, "--open", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) | {"version": None} == {
        "url": live.url,
        "socket": None,
        "opened": True,
        "version": None,
    }
    wait_until(opened.exists, what="the browser to be started")
    assert opened.read_text() == live.url


def test_web_says_why_it_cannot_show_the_page(live: LiveDaemon, tmp_path: Path) -> None:
    nothing = maxwell("web", "--state", str(tmp_path))
    assert nothing.returncode == 1
    assert nothing.stderr.startswith(f"maxwell web: error: no daemon at {tmp_path}: start it")
    port = _free_port()
    closed = maxwell("web", "--listen-address", f"127.0.0.1:{port}")
    assert closed.returncode == 1 and "is the daemon running with --listen" in closed.stderr
    remote = maxwell("web", "--listen-address", "192.0.2.1:80")
    assert remote.returncode == 2 and "--listen-address '192.0.2.1:80'" in remote.stderr
    no_tcp = maxwell("web", "--state", str(live.state), "--open")
    assert no_tcp.returncode == 2 and "--open needs the daemon's TCP listener" in no_tcp.stderr
    address = live.url.removeprefix("http://").rstrip("/")
    env = {**os.environ, "BROWSER": str(tmp_path / "no-such-browser")}
    no_browser = maxwell("web", "--listen-address", address, "--open", env=env)
    assert no_browser.returncode == 1, no_browser.stderr
    assert f"no browser could be opened here: open {live.url}" in no_browser.stderr
    for result in (nothing, closed, remote, no_tcp, no_browser):
        assert len(result.stderr.splitlines()) == 1, result.stderr


# --- in a real browser -------------------------------------------------------------------------


def _unavailable(reason: str) -> NoReturn:
    if REQUIRED:
        pytest.fail(f"{reason}: CI must run the browser tests (.ci/run installs both)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[test]')")
    executable = shutil.which("chromium")
    if executable is None:
        _unavailable("Debian's chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable)
        try:
            yield launched
        finally:
            launched.close()


def _polls(watched: Watched) -> int:
    """How many times the page has read /metrics (it reads it once a poll)."""
    return sum(url.endswith("metrics") for url, _ in watched.requests)


class Watched:
    """A page with its console errors, uncaught exceptions and requested URLs collected."""

    def __init__(self, browser: Any, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 1000})
        self.errors: list[str] = []
        self.requests: list[tuple[str, str | None]] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        self.page.on(
            "request", lambda r: self.requests.append((r.url, r.headers.get("authorization")))
        )
        self.page.goto(url)

    def paths(self) -> set[str]:
        return {re.sub(r"^http://[^/]+/|\?.*$", "", url) for url, _ in self.requests}


LOOP = "while :; do :; done"
SLEEP = "sleep 300; :"  # not exec'd by sh: the shell, tagged, stays the agent's process


def _spawn(live: LiveDaemon, name: str, bid: str, script: str) -> str:
    spawned = maxwell("spawn", "--state", str(live.state), "--fund", "200", "--bid", bid,
                      "--name", name, "--", "sh", "-c", script, live.tag)  # fmt: skip
    assert spawned.returncode == 0, spawned.stderr
    return spawned.stdout.strip()


def _chromatic_pixels(page: Any, chart: str) -> int:
    """Pixels of the chart's canvas in a series' colour (not white, grey or black: not the
    background, the grid or the axes), read back from the canvas itself."""
    counted: int = page.evaluate(
        """(id) => {
          const canvas = document.querySelector(`#${id} canvas`);
          const context = canvas.getContext("2d");
          const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
          let count = 0;
          for (let i = 0; i < pixels.length; i += 4) {
            const [r, g, b, a] = [pixels[i], pixels[i + 1], pixels[i + 2], pixels[i + 3]];
            if (a > 200 && Math.max(r, g, b) - Math.min(r, g, b) > 60) count += 1;
          }
          return count;
        }""",
        chart,
    )
    return counted


def _state_of(page: Any, agent: str) -> str | None:
    cell = page.query_selector(f'#agents tr[data-agent="{agent}"] td.state')
    return None if cell is None else str(cell.text_content())


def test_without_a_token_the_page_shows_what_metrics_shows_and_asks_nothing_else(
    browser: Any, live: LiveDaemon
) -> None:
    agent = _spawn(live, "quiet", "1", SLEEP)
    watched = Watched(browser, live.url)
    page = watched.page
    page.wait_for_selector(f'#agents tr[data-agent="{agent}"]', timeout=20_000)
    assert "The event log needs the admin token" in str(page.text_content("#events-note"))
    assert page.query_selector_all("#events li") == []
    assert watched.paths() <= {"", "metrics", "favicon.ico"} | {
        f"static/{name}" for name in PAGE_FILES
    }, watched.paths()  # never /agents, /events, /status: they need a token
    assert watched.errors == []
    page.close()
    maxwell("kill", "--state", str(live.state), agent)


def test_the_page_draws_the_live_market_in_a_real_browser(
    browser: Any, live: LiveDaemon, tmp_path: Path
) -> None:
    looper = _spawn(live, "looper", "2", LOOP)
    _spawn(live, "busy", "1.5", LOOP)
    _spawn(live, "sleeper", "1", SLEEP)
    watched = Watched(browser, live.url)
    page = watched.page
    page.fill("#token-input", live.token)
    page.click("#token-form button")
    page.wait_for_selector("#who:has-text('admin')", timeout=10_000)
    wait_until(lambda: _state_of(page, looper) in ("running", "throttled"), what="looper shown")
    row = f'#agents tr[data-agent="{looper}"]'
    wait_until(lambda: "pid " in str(page.text_content(row)), what="looper's process shown")
    page.wait_for_selector("#events li .kind:has-text('spawned')", timeout=10_000)
    assert page.is_hidden("#cluster-section")  # no gossip on this daemon
    wait_until(
        lambda: all(_chromatic_pixels(page, c) > 200 for c in ("chart-price", "chart-heat"))
        and _chromatic_pixels(page, "chart-energy") > 2_000,
        what="the charts drawn", timeout_s=30,
    )  # fmt: skip
    killed = maxwell("kill", "--state", str(live.state), "looper")
    assert killed.returncode == 0, killed.stderr
    wait_until(lambda: _state_of(page, looper) == "dead", what="looper shown dead")
    page.wait_for_selector("#events li .kind:has-text('killed')", timeout=10_000)
    polled = _polls(watched)  # a few more polls: the energy chart keeps the dead agent's joules
    wait_until(lambda: page.evaluate("1") == 1 and _polls(watched) >= polled + 3,
               what="three more polls", timeout_s=30)  # fmt: skip
    picture = tmp_path / "page.png"
    page.screenshot(path=str(picture), full_page=True)
    assert picture.stat().st_size > 20_000
    if os.environ.get("MAXWELL_SAVE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(picture, SCREENSHOT)
    assert all(live.token not in url for url, _ in watched.requests)  # never in a URL
    assert {auth for url, auth in watched.requests if "/events" in url} == {f"Bearer {live.token}"}
    assert page.evaluate("sessionStorage.getItem('maxwell.token')") == live.token
    assert watched.errors == [], watched.errors
    page.close()


def _cluster_page(node: FakeNode) -> bytes:
    """The node's own metrics and, as a gossiping daemon adds them, its cluster's: two verified
    nodes, one of them hot (2.5 °C of headroom, under the default distress threshold)."""
    from maxwell.gossip.metrics import CLUSTER_METRIC_NAMES
    from maxwell.node.metrics import render_metrics

    cluster = {
        "maxwell_gossip_distress_events_total": [("", 3)],
        "maxwell_cluster_node_price_joule_tokens_per_joule": [
            ('node="cool"', 0.8),
            ('node="hot"', 1.9),
        ],
        "maxwell_cluster_node_headroom_celsius": [('node="cool"', 40), ('node="hot"', 2.5)],
        "maxwell_cluster_node_free_cores": [('node="cool"', 3), ('node="hot"', 0)],
    }
    assert {name.removesuffix("_total") for name in cluster} <= {
        name.removesuffix("_total") for name in CLUSTER_METRIC_NAMES
    }
    lines = [
        f"{name}{{{labels}}} {value}" if labels else f"{name} {value}"
        for name, samples in cluster.items()
        for labels, value in samples
    ]
    return render_metrics(node.status()) + "\n".join(lines).encode() + b"\n"


def test_the_cluster_shows_each_nodes_price_and_distress_from_the_metrics(browser: Any) -> None:
    from maxwell.node.api import serve

    node = FakeNode()
    server = serve(
        create_app(node, metrics=lambda: _cluster_page(node)), socket_path=None,
        listen="127.0.0.1:0",
    )  # fmt: skip
    try:
        assert server.tcp_address is not None
        watched = Watched(browser, f"http://127.0.0.1:{server.tcp_address.port}/")
        page = watched.page
        page.wait_for_selector('#cluster tr[data-node="hot"]', timeout=20_000)
        assert page.is_visible("#cluster-section")
        hot = str(page.text_content('#cluster tr[data-node="hot"]'))
        cool = str(page.text_content('#cluster tr[data-node="cool"]'))
        assert "1.9000" in hot and "2.5" in hot and hot.endswith("distress")
        assert "0.8000" in cool and cool.endswith("ok")
        assert "distress events received: 3" in str(page.text_content("#cluster-note"))
        assert watched.errors == []
        page.close()
    finally:
        server.stop()
