"""``/healthz`` on a port of its own, answered by a thread, never queued behind signups.

On the app's port ``/healthz`` is answered by the same event loop as the signups: under a rush
that loop is busy, and a probe waits for the iterations ahead of it (40-60 ms of CPU each at
600 signups/s, measured by a loop-lag monitor), 100-300 ms in all. A liveness probe that
times out under load gets a healthy process restarted in the middle of its busiest minute.

:class:`LivenessServer` listens on ``NEWSLETTER_SUBSCRIPTION_HEALTH_PORT`` in a daemon thread
with a blocking socket: the only thing it shares with the loop is the GIL, which the loop's
thread hands over at least every switch interval (5 ms). It does not pretend: the loop beats
a heartbeat every :data:`BEAT_S`, and the answer is 200 only while the last beat is younger
than ``stale_after_s``; a loop stuck in a blocking call or an endless callback gets 503, which
the loop-served ``/healthz`` could only show by timing out.

With ``serve --workers N`` every worker binds the port with ``SO_REUSEPORT`` and the kernel
hands each probe to one of them (uvicorn's supervisor already restarts a worker that dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)
BEAT_S = 0.5
_READ_TIMEOUT_S = 2.0  # a probe that sends nothing cannot hold the thread longer


class LivenessServer:
    """``GET /healthz`` on its own socket and thread; 200 while the event loop beats."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        stale_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._stale_after_s = stale_after_s
        self._last_beat = clock()
        self._beating: asyncio.TimerHandle | None = None
        self._stopped = threading.Event()
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):  # the workers of one service share the port
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._socket.bind((host, port))
        self._socket.listen(64)
        self._thread = threading.Thread(target=self._serve, name="liveness", daemon=True)

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def start(self) -> None:
        """Start beating on the running loop and answering on the thread."""
        self._beat()
        self._thread.start()
        log.info("liveness_port_open", port=self.port)

    def stop(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
        self._stopped.set()
        if self._thread.is_alive():
            # The thread waits in a blocking accept (a timeout would wake it for nothing):
            # one connection of our own lets it see the flag.
            host, port = self._socket.getsockname()[:2]
            with contextlib.suppress(OSError), socket.create_connection((host, port), 2):
                pass
            self._thread.join(timeout=5)
        self._socket.close()

    def _beat(self) -> None:
        self._last_beat = self._clock()
        self._beating = asyncio.get_running_loop().call_later(BEAT_S, self._beat)

    def answer(self, path: bytes) -> tuple[int, dict[str, object]]:
        """The status and body for a request line's path (the thread's one decision)."""
        if path.split(b"?", 1)[0] != b"/healthz":
            return 404, {"detail": "not found"}
        silent_s = self._clock() - self._last_beat
        if silent_s > self._stale_after_s:
            return 503, {"status": "event loop stalled", "silent_s": round(silent_s, 1)}
        return 200, {"status": "alive"}

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            if self._stopped.is_set():
                connection.close()
                return
            with contextlib.suppress(OSError), connection:
                self._reply(connection)

    def _reply(self, connection: socket.socket) -> None:
        connection.settimeout(_READ_TIMEOUT_S)
        head = b""
        while b"\r\n" not in head and len(head) < 8192:
            chunk = connection.recv(4096)
            if not chunk:
                return
            head += chunk
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        body: dict[str, object]
        if len(parts) != 3 or parts[0] not in {b"GET", b"HEAD"}:
            status, body = 400, {"detail": "bad request"}
        else:
            status, body = self.answer(parts[1])
        payload = json.dumps(body).encode()
        reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(
            status, b"Service Unavailable"
        )
        connection.sendall(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Cache-Control: no-store\r\nConnection: close\r\n\r\n%s"
            % (status, reason, len(payload), payload if parts[0] != b"HEAD" else b"")
        )
