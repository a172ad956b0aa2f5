"""``/healthz`` on the health port: answered by a child process, not by the service's loop.

Real processes and sockets: the loop of the test is blocked on purpose (a synchronous call made
on it), and the probe must still be answered; when the loop stops beating for longer than the
limit the answer turns to 503, and back to 200 once it beats again; when the service side stops,
the child exits and the port no longer answers. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from services.subscription.liveness import LivenessServer, answer
from tests.integration.subscription_support import private_amqp_url, running_app, settings_for
from tests.support.ports import free_port

pytestmark = pytest.mark.integration
__all__ = ["private_amqp_url"]


def _get(port: int, path: str = "/healthz") -> tuple[int, bytes]:
    """One blocking GET on a fresh connection: (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as wire:
        wire.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := wire.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _until(status: int, port: int, *, within_s: float) -> float:
    """Probe until the answer is ``status``; the seconds it took (fails after ``within_s``)."""
    started = time.monotonic()
    seen: list[int] = []
    while time.monotonic() - started < within_s:
        seen.append(_get(port)[0])
        if seen[-1] == status:
            return time.monotonic() - started
    raise AssertionError(f"no {status} within {within_s}s; answers: {sorted(set(seen))}")


async def test_the_health_port_answers_while_the_loop_is_blocked() -> None:
    port = free_port()
    liveness = LivenessServer(host="127.0.0.1", port=port, stale_after_s=30.0)
    liveness.start()
    try:
        # Called on the loop's own thread: the loop can run nothing until it returns.
        status, body = _get(port)
        assert (status, body) == (200, b'{"status": "alive"}')
        assert _get(port, "/other")[0] == 404
    finally:
        liveness.stop()


async def test_a_loop_that_stops_beating_is_reported_stalled_then_alive_again() -> None:
    port = free_port()
    liveness = LivenessServer(host="127.0.0.1", port=port, stale_after_s=0.5)
    liveness.start()
    try:
        assert _get(port)[0] == 200
        # The loop is blocked by this synchronous wait: no beat gets out.
        _until(503, port, within_s=30)
        status, body = _get(port)
        assert status == 503
        assert b"event loop stalled" in body, body
        # Let the loop run: its beats resume and the answer turns back to 200.
        deadline = time.monotonic() + 30
        while _get(port)[0] != 200:
            assert time.monotonic() < deadline, "the beats did not resume"
            await asyncio.sleep(0.05)
    finally:
        liveness.stop()


async def test_the_child_exits_when_the_service_side_stops() -> None:
    port = free_port()
    liveness = LivenessServer(host="127.0.0.1", port=port)
    liveness.start()
    assert _get(port)[0] == 200
    liveness.stop()
    assert liveness.child is not None
    assert liveness.child.poll() is not None, "the child outlived the service"
    with pytest.raises(ConnectionRefusedError):
        _get(port)


def test_the_answer_depends_on_the_path_and_the_last_beat() -> None:
    assert answer(b"/healthz", silent_s=0.4, stale_after_s=10)[0] == 200
    assert answer(b"/healthz?x=1", silent_s=0.4, stale_after_s=10)[0] == 200
    assert answer(b"/healthz", silent_s=10.5, stale_after_s=10)[0] == 503
    assert answer(b"/readyz", silent_s=0, stale_after_s=10)[0] == 404


async def test_the_app_opens_the_health_port_when_it_is_set(
    private_amqp_url: str, postgres_url: str, tmp_path: Path
) -> None:
    port = free_port()
    settings = settings_for(private_amqp_url, postgres_url, tmp_path).model_copy(
        update={"subscription_health_port": port}
    )
    async with running_app(settings) as (_, client):
        assert (await client.get("/healthz")).status_code == 200
        assert await asyncio.to_thread(_get, port) == (200, b'{"status": "alive"}')
    with pytest.raises(ConnectionRefusedError):
        _get(port)


async def test_a_child_that_dies_is_replaced() -> None:
    port = free_port()
    liveness = LivenessServer(host="127.0.0.1", port=port)
    liveness.start()
    try:
        assert _get(port)[0] == 200
        first = liveness.child
        assert first is not None
        first.kill()
        first.wait()
        deadline = time.monotonic() + 30
        while liveness.child is first:  # the next beat notices and starts another
            assert time.monotonic() < deadline, "no new child"
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(_get, port) == (200, b'{"status": "alive"}')
    finally:
        liveness.stop()
