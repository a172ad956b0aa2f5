"""``issue check --links`` against a real HTTP server on 127.0.0.1: 200, 301 -> 200, 404, 500,
a server that refuses HEAD, one that never answers, and a port nobody listens on."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_cli.main import app
from services.renderer.link_checks import LinkTarget, check_links, link_client

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "sample-issue"
ENV = {
    "NEWSLETTER_MODE": "test",
    "NEWSLETTER_DATABASE_URL": "sqlite:///:memory:",
    "NEWSLETTER_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/unused",
}


@dataclass
class Site:
    """What the test server saw: requests by method and path, and the most at once."""

    base: str
    refused_port: int
    requests: list[tuple[str, str]] = field(default_factory=list)
    in_flight: int = 0
    most_at_once: int = 0
    lock: threading.Condition = field(default_factory=threading.Condition)
    release: threading.Event = field(default_factory=threading.Event)
    together: int = 0  # /together/* waits until this many are in flight (at most 0.5 s)


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, location: str = "") -> None:
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", "2")
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(b"ok")

        def _serve(self) -> None:
            with site.lock:
                site.requests.append((self.command, self.path))
                site.in_flight += 1
                site.most_at_once = max(site.most_at_once, site.in_flight)
                site.lock.notify_all()
            try:
                self._route()
            finally:
                with site.lock:
                    site.in_flight -= 1

        def _route(self) -> None:
            path = self.path
            if path == "/ok":
                self._answer(200)
            elif path == "/moved":
                self._answer(301, location=f"{site.base}/ok")
            elif path == "/missing":
                self._answer(404)
            elif path == "/broken":
                self._answer(500)
            elif path == "/no-head":
                self._answer(405 if self.command == "HEAD" else 200)
            elif path == "/loop":
                self._answer(302, location=f"{site.base}/loop")
            elif path == "/hang":
                site.release.wait(30)  # answers only when the test ends: a host that stalls
                self._answer(200)
            elif path.startswith("/together/"):
                with site.lock:
                    site.lock.wait_for(lambda: site.in_flight >= site.together, timeout=0.5)
                self._answer(200)
            else:
                self._answer(404)

        do_GET = _serve
        do_HEAD = _serve

    return Handler


@pytest.fixture
def site() -> Iterator[Site]:
    # A port bound but never listened on: connecting to it is refused, with no race.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    found = Site(base=f"http://127.0.0.1:{port}", refused_port=closed.getsockname()[1])
    server.RequestHandlerClass = _handler(found)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        found.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        closed.close()


def target(url: str, line: int = 1) -> LinkTarget:
    return LinkTarget(url=url, file="en.md", line=line, column=1)


async def test_each_kind_of_answer_is_reported_with_where_the_link_is(site: Site) -> None:
    urls = {
        "ok": f"{site.base}/ok",
        "moved": f"{site.base}/moved",
        "missing": f"{site.base}/missing",
        "broken": f"{site.base}/broken",
        "no-head": f"{site.base}/no-head",
        "loop": f"{site.base}/loop",
        "hang": f"{site.base}/hang",
        "refused": f"http://127.0.0.1:{site.refused_port}/",
    }
    targets = [target(url, line) for line, url in enumerate(urls.values(), start=10)]
    targets.append(target("mailto:editor@example.org", 30))  # not asked
    # Only /hang may run out of time: 5 s leaves the redirect loop room on a loaded machine.
    async with link_client(timeout=5.0, concurrency=4) as client:
        report = await check_links(targets, client=client, concurrency=4, timeout=5.0)
    answers = {name: a for name, (_t, a) in zip(urls, report.checked, strict=True)}
    assert answers["ok"].status == 200
    assert answers["moved"].status == 200
    assert answers["moved"].final_url == f"{site.base}/ok"
    assert answers["no-head"].status == 200, "a GET follows a refused HEAD"
    assert ("GET", "/no-head") in site.requests
    assert ("GET", "/ok") not in site.requests, "a HEAD that answers is enough"
    assert [name for name, a in answers.items() if not a.ok] == [
        "missing",
        "broken",
        "loop",
        "hang",
        "refused",
    ]
    assert report.lines() == [
        f"en.md:12:1: link {urls['missing']} answers 404 Not Found "
        "(fix the address or remove the link)",
        f"en.md:13:1: link {urls['broken']} answers 500 Internal Server Error "
        "(fix the address or remove the link)",
        f"en.md:15:1: link {urls['loop']} does not answer: too many redirects "
        "(fix the address or remove the link)",
        f"en.md:16:1: link {urls['hang']} does not answer: no answer within 5 s "
        "(fix the address or remove the link)",
        f"en.md:17:1: link {urls['refused']} does not answer: cannot connect "
        "(All connection attempts failed) (fix the address or remove the link)",
    ]
    assert not report.ok


async def test_links_are_asked_concurrently_but_never_more_than_the_bound(site: Site) -> None:
    # Each request holds until a fourth is in flight beside it: only a checker that asks more
    # than three at once gets there (then at once); a bounded one waits out the 0.5 s each time.
    site.together = 4
    targets = [target(f"{site.base}/together/{n}") for n in range(9)]
    # the client's pool would allow 10: the bound is check_links' own
    async with link_client(timeout=10.0, concurrency=10) as client:
        report = await check_links(targets, client=client, concurrency=3, timeout=10.0)
    assert report.ok, report.lines()
    assert site.most_at_once == 3


async def test_a_url_written_twice_is_asked_once_and_reported_at_both_places(site: Site) -> None:
    url = f"{site.base}/missing"
    async with link_client(timeout=2.0, concurrency=2) as client:
        report = await check_links(
            [target(url, 3), target(url, 7)], client=client, concurrency=2, timeout=2.0
        )
    assert [line.split(": ")[0] for line in report.lines()] == ["en.md:3:1", "en.md:7:1"]
    assert site.requests.count(("HEAD", "/missing")) == 1


def test_issue_check_links_fails_on_a_dead_link_and_passes_without_it(
    site: Site, tmp_path: Path
) -> None:
    issue = tmp_path / "issue"
    shutil.copytree(SAMPLE, issue)
    for language in ("en", "be", "ru"):
        path = issue / f"{language}.md"
        text = path.read_text(encoding="utf-8")
        # every link of the sample now points at the local server
        text = text.replace(
            "https://www.osce.org/forum-for-security-cooperation", site.base + "/ok"
        )
        text = text.replace(
            "https://weekly-digest.example.org/images/2021-50/border-map.png", site.base + "/moved"
        )
        path.write_text(text, encoding="utf-8")
    runner = CliRunner()
    good = runner.invoke(app, ["issue", "check", str(issue), "--no-spam", "--links"], env=ENV)
    assert good.exit_code == 0, good.output
    en = issue / "en.md"
    en.write_text(
        en.read_text(encoding="utf-8").replace(site.base + "/ok", site.base + "/missing"), "utf-8"
    )
    bad = runner.invoke(app, ["issue", "check", str(issue), "--no-spam", "--links"], env=ENV)
    assert bad.exit_code == 1, bad.output
    assert (
        f"en.md:20:14: link {site.base}/missing answers 404 Not Found "
        "(fix the address or remove the link)"
    ) in bad.stderr.splitlines()
    offline = runner.invoke(app, ["issue", "check", str(issue), "--no-spam"], env=ENV)
    assert offline.exit_code == 0, "without --links no link is asked"
