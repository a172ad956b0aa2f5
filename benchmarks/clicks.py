"""``newsletter bench clicks``: the redirect of a tracked link under a steady click rate.

The renderer's click route (:mod:`services.renderer.click_pages`, with its real counter,
flusher and SQLite database) runs in a process of its own under uvicorn; this process is an
open-loop load generator: it schedules requests at ``rate`` per second whatever the answers
do, sends each on the next free keep-alive connection (raw HTTP/1.1 on sockets, so that the
client's own cost stays small) and measures each latency from the request's *scheduled* time,
so a slow answer delays the ones behind it in the figures (no coordinated omission).
With ``pixel=True`` the same load goes to the open pixel (``/{lang}/o/{token}.gif``, with
``NEWSLETTER_OPEN_TRACKING=true``): one token check and one counter increment, no lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

SECRET = "bench-clicks-secret-" + "b" * 32
AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0 reader-{}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(database_url: str, port: int, flush_s: float, pixel: bool = False) -> None:
    """The server process: the click route alone, as the renderer wires it."""
    import uvicorn
    from prometheus_client import CollectorRegistry
    from starlette.applications import Starlette

    from services.renderer.catalogs import Templates
    from services.renderer.click_pages import ClickPages
    from services.renderer.clicks import ClickMetrics, ClickService
    from services.renderer.settings import load_renderer_settings
    from shared.db.engine import create_engine, session_factory
    from shared.logging import configure_logging
    from shared.messaging.publisher import Publisher
    from shared.tokens import TokenSigner

    configure_logging(service="bench-clicks", level="WARNING")

    async def main() -> None:
        settings = load_renderer_settings(
            mode="test",
            database_url=database_url,
            secret_key=SECRET,
            var_dir=Path(tempfile.gettempdir()),
            open_tracking=pixel,
        )
        engine = create_engine(database_url)
        sessions = session_factory(engine)
        clicks = ClickService(
            sessions=sessions,
            signer=TokenSigner(SECRET),
            flush_s=flush_s,
            metrics=ClickMetrics(CollectorRegistry()),
        )
        pages = ClickPages(
            clicks=clicks,
            settings=settings,
            sessions=sessions,
            publisher=Publisher.__new__(Publisher),  # the click route publishes nothing
            templates=Templates(),
        )
        app = Starlette(routes=pages.routes())
        stop = asyncio.Event()
        flusher = asyncio.create_task(clicks.run_flusher(stop))
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        try:
            await server.serve()
        finally:
            stop.set()
            await flusher
            await engine.dispose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


async def _seed(database_url: str, links: int) -> list[str]:
    from services.renderer.click_store import save_tracked_links
    from services.renderer.tracking import LinkRef, LinkTokens
    from shared.db.engine import create_engine, session_factory
    from shared.db.tables import TrackedLink
    from shared.tokens import TokenSigner

    engine = create_engine(database_url)
    try:
        rows = [
            TrackedLink(
                issue_number=50,
                edition=edition,
                article=0,
                link=n,
                article_key="minsk-escalation",
                url=f"https://example.net/{edition}/{n}",
            )
            for edition in ("en", "be", "ru")
            for n in range(links)
        ]
        await save_tracked_links(session_factory(engine), links=rows)
    finally:
        await engine.dispose()
    tokens = LinkTokens(TokenSigner(SECRET))
    return [f"/{r.edition}/r/{tokens.mint(LinkRef(50, r.edition, 0, r.link, links))}" for r in rows]


def _pixels() -> list[str]:
    from services.renderer.opens import OpenRef, OpenTokens, pixel_url
    from shared.tokens import TokenSigner

    tokens = OpenTokens(TokenSigner(SECRET))
    return [pixel_url("", edition=e, token=tokens.mint(OpenRef(50, e))) for e in ("en", "be", "ru")]


async def _counted(database_url: str, table: str = "link_click") -> dict[str, int]:
    from sqlalchemy import text

    from shared.db.engine import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(f"SELECT verdict, SUM(count) FROM {table} GROUP BY verdict")  # noqa: S608
            )
            return {str(v): int(n) for v, n in rows.all()}
    finally:
        await engine.dispose()


async def _wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return


async def _load(
    port: int,
    paths: list[str],
    *,
    rate: float,
    seconds: float,
    connections: int,
    expect: bytes = b"HTTP/1.1 302",
) -> tuple[list[float], int]:
    """Open-loop: one request every 1/rate s, latency from its scheduled time."""
    slots: asyncio.Queue[float] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)

    async def worker(index: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        agent = AGENT.format(index)
        try:
            while True:
                scheduled = await slots.get()
                if scheduled < 0:
                    return
                path = random.choice(paths)
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: {agent}\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                latencies.append(time.perf_counter() - scheduled)
                if not head.startswith(expect):
                    errors += 1
        finally:
            writer.close()

    workers = [asyncio.create_task(worker(i)) for i in range(connections)]
    start = time.perf_counter() + 0.2
    for n in range(total):
        at = start + n / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        slots.put_nowait(at)
    for _ in workers:
        slots.put_nowait(-1.0)
    await asyncio.gather(*workers)
    return latencies, errors


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_bench(
    *,
    rate: float = 500.0,
    seconds: float = 20.0,
    connections: int = 32,
    links: int = 6,
    pixel: bool = False,
) -> dict[str, Any]:
    from shared.db.migrate import upgrade_async

    with tempfile.TemporaryDirectory(prefix="bench-clicks-") as folder:
        database_url = f"sqlite:///{folder}/clicks.db"
        await upgrade_async(database_url)
        paths = _pixels() if pixel else await _seed(database_url, links)
        expect = b"HTTP/1.1 200" if pixel else b"HTTP/1.1 302"
        port = _free_port()
        context = multiprocessing.get_context("spawn")
        server = context.Process(target=_serve, args=(database_url, port, 1.0, pixel), daemon=True)
        server.start()
        try:
            await _wait_listening(port)
            await _load(  # warm-up
                port, paths, rate=rate, seconds=1.0, connections=connections, expect=expect
            )
            load_before = os.getloadavg()
            assert server.pid is not None
            cpu_before = _cpu_seconds(server.pid)
            started = time.perf_counter()
            latencies, errors = await _load(
                port, paths, rate=rate, seconds=seconds, connections=connections, expect=expect
            )
            elapsed = time.perf_counter() - started
            cpu = _cpu_seconds(server.pid) - cpu_before
            load_after = os.getloadavg()
        finally:
            if server.pid is not None:
                os.kill(server.pid, 2)  # SIGINT: uvicorn stops, the flusher writes what it holds
            server.join(30)
        counted = await _counted(database_url, "mail_open" if pixel else "link_click")
    ms = [v * 1000 for v in latencies]
    return {
        "route": "open pixel" if pixel else "click redirect",
        "rate_asked_per_s": rate,
        "rate_achieved_per_s": round(len(ms) / elapsed, 1),
        "requests": len(ms),
        "errors": errors,
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(_quantile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "target_p99_ms": 5.0,
        # The server's own CPU per redirect: what the machine's load does not change much.
        "server_cpu_us_per_click": round(cpu / max(1, len(ms)) * 1e6, 1),
        "server_cpu_share_of_one_core": round(cpu / elapsed, 3),
        "written_by_verdict": counted,  # includes the 1 s warm-up
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }
