"""``/healthz`` on a port of its own, answered by a small process, never queued behind signups.

On the app's port ``/healthz`` is answered by the same event loop as the signups: under a rush
that loop is busy, and a probe waits for the iterations ahead of it (40-60 ms of CPU each at
600 signups/s, measured by a loop-lag monitor), 100-700 ms in all. A liveness probe that
times out under load gets a healthy process restarted in the middle of its busiest minute.

:class:`LivenessServer` binds ``NEWSLETTER_SUBSCRIPTION_HEALTH_PORT`` and hands the socket to
a child process (``python -m services.subscription.liveness``, standard library only, about
20 MB); the service keeps the socket too, and starts a new child if one dies. A thread of the
service would have shared its GIL: on a loaded machine the service's thread is preempted while
holding it, and a probe then waited for the whole process to get a core back (up to 400 ms at
a load average of 8 on 2 cores, measured); the child sleeps in ``select`` and is woken at once
by the scheduler.

The child does not pretend: the service's event loop writes a byte down a pipe every
:data:`BEAT_S`, and the answer is 200 only while the last beat is younger than
``stale_after_s``. A loop stuck in a blocking call or an endless callback gets 503 (the
loop-served ``/healthz`` could only time out); when the service dies the pipe closes and the
child exits, so the port stops answering.

With ``serve --workers N`` every worker binds the port with ``SO_REUSEPORT`` and starts its
own child; the kernel hands each probe to one of them (uvicorn's supervisor restarts a worker
that dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

BEAT_S = 0.5
_READ_TIMEOUT_S = 2.0  # a probe that sends nothing cannot hold the child longer
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 503: b"Service Unavailable"}


def answer(path: bytes, *, silent_s: float, stale_after_s: float) -> tuple[int, dict[str, object]]:
    """The status and body for a request's path, ``silent_s`` after the loop's last beat."""
    if path.split(b"?", 1)[0] != b"/healthz":
        return 404, {"detail": "not found"}
    if silent_s > stale_after_s:
        return 503, {"status": "event loop stalled", "silent_s": round(silent_s, 1)}
    return 200, {"status": "alive"}


class LivenessServer:
    """The service's side: the socket, the child that answers on it, the heartbeat."""

    def __init__(self, *, host: str, port: int, stale_after_s: float = 10.0) -> None:
        self._stale_after_s = stale_after_s
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):  # the workers of one service share the port
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            self._socket.bind((host, port))
        except OSError as err:
            self._socket.close()
            raise OSError(
                f"NEWSLETTER_SUBSCRIPTION_HEALTH_PORT={port} cannot be bound on {host}: {err}"
            ) from err
        self._socket.listen(64)
        self._beats: int | None = None  # write end of the heartbeat pipe
        self._beating: asyncio.TimerHandle | None = None
        self.child: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def start(self) -> None:
        """Start the child and beat on the running loop."""
        self._spawn()
        self._beat()

    def _spawn(self) -> None:
        read_end, self._beats = os.pipe()
        os.set_blocking(self._beats, False)
        listener = self._socket.fileno()
        command = [
            sys.executable, "-m", "services.subscription.liveness",
            str(read_end), str(listener), str(self._stale_after_s),
        ]  # fmt: skip
        try:
            self.child = subprocess.Popen(command, pass_fds=(read_end, listener))  # noqa: S603
        finally:
            os.close(read_end)

    def stop(self) -> None:
        """Close the pipe (the child sees its end and exits) and wait for the child."""
        if self._beating is not None:
            self._beating.cancel()
            self._beating = None
        self._close_pipe()
        self._socket.close()

    def _close_pipe(self) -> None:
        if self._beats is not None:
            os.close(self._beats)
            self._beats = None
        if self.child is not None:
            try:
                self.child.wait(5)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()

    def _beat(self) -> None:
        if self.child is not None and self.child.poll() is not None:
            # The child died (killed, out of memory): the socket is still ours, so a new
            # child takes it over instead of the probes failing until the pod is restarted.
            import structlog  # here: the child imports this module, and only the stdlib

            structlog.get_logger(__name__).warning(
                "liveness_child_restarted", returncode=self.child.returncode
            )
            self._close_pipe()
            self._spawn()
        if self._beats is not None:
            # A full pipe means the child is behind on reading: it has beats enough.
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(self._beats, b".")
        self._beating = asyncio.get_running_loop().call_later(BEAT_S, self._beat)


def _reply(connection: socket.socket, *, silent_s: float, stale_after_s: float) -> None:
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
        status, body = answer(parts[1], silent_s=silent_s, stale_after_s=stale_after_s)
    payload = json.dumps(body).encode()
    connection.sendall(
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Cache-Control: no-store\r\nConnection: close\r\n\r\n%s"
        % (status, _REASONS[status], len(payload), payload if parts[0] != b"HEAD" else b"")
    )


def serve(beats: int, listener: socket.socket, *, stale_after_s: float) -> None:
    """The child: answer probes until the service's end of the pipe closes."""
    last_beat = time.monotonic()
    listener.setblocking(False)
    with selectors.DefaultSelector() as selector:
        selector.register(beats, selectors.EVENT_READ)
        selector.register(listener, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj == beats:
                    if not os.read(beats, 4096):
                        return  # the service is gone
                    last_beat = time.monotonic()
                    continue
                with contextlib.suppress(BlockingIOError):
                    connection, _ = listener.accept()
                    with contextlib.suppress(OSError), connection:
                        connection.setblocking(True)
                        silent_s = time.monotonic() - last_beat
                        _reply(connection, silent_s=silent_s, stale_after_s=stale_after_s)


if __name__ == "__main__":
    # The service stops us by closing the pipe, also after a Ctrl-C of the whole group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    beats_fd, listener_fd, stale = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    serve(beats_fd, socket.socket(fileno=listener_fd), stale_after_s=stale)
