"""RSA DKIM signatures made in a child process, fed in batches over a pipe.

Why a process and not threads (measured here, 2 cores, RSA-2048, ~33 KB mails): the
private-key operation (0.29 ms) releases the GIL, but a signing thread must take the GIL back
after every signature from an event loop that is busy running Python; on a loaded machine that
cost the loop 0.14-0.34 ms per message and the process 0.56-0.70 ms per message in all, for a
signature that costs 0.32 ms inline. A child process shares no GIL with the event loop: the
loop hashes the body (``hashlib``, 0.02 ms), queues the header block (about 1 KB) and the hash,
and writes everything queued in one loop iteration in one write; the child canonicalizes the
headers and signs every request it has read, then answers them all in one write, which wakes
the loop once per batch.

The protocol, on the child's stdin and stdout, is frames of a 4-byte big-endian length and a
payload. The first frame to the child is its configuration (JSON: the PEM key, selector,
domain, header names), so the key never appears on a command line or in the environment; the
child answers it with an empty frame once it can sign (``START_TIMEOUT_S``). Each later
frame is one message: the 32-byte body hash, then the header block. The child answers every
frame in order with the ``DKIM-Signature`` field, or with an empty frame when it could not
sign it. It exits when its stdin closes (the dispatcher stopped).

Nothing is lost when the child dies, hangs or cannot sign: every waiting message is signed
inline in the dispatcher, with the same key, and the next message starts a new child. A child
that has not answered a request for ``ANSWER_TIMEOUT_S`` is taken for hung and killed; one
that does not start is tried again after ``RETRY_AFTER_S``, signing inline meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import structlog

from services.dispatcher.dkim_signing import DkimSigner, simple_body_hash, split_head

log = structlog.get_logger(__name__)

_LENGTH = struct.Struct(">I")
_HASH_BYTES = 32
# Answers written at once at most: a batch is answered in parts, so the first of a large batch
# are sent while the child signs the rest.
_ANSWERS_PER_WRITE = 32
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
# A child signs about 3,000 messages a second: a request unanswered this long means it hangs.
ANSWER_TIMEOUT_S = 10.0
START_TIMEOUT_S = 30.0  # imports and the key, on a loaded machine
RETRY_AFTER_S = 60.0


class _Channel(asyncio.SubprocessProtocol):
    """The dispatcher's end: requests queued in one loop iteration go out in one write;
    answers resolve the waiting futures in order."""

    def __init__(self, fallback: DkimSigner) -> None:
        self._fallback = fallback
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._queued: list[bytes] = []
        self._waiting: collections.deque[tuple[asyncio.Future[bytes], bytes, bytes]] = (
            collections.deque()
        )
        self._buffer = bytearray()
        self._answered = 0  # requests answered so far: the watchdog's progress mark
        self._watchdog: asyncio.TimerHandle | None = None
        self.ready: asyncio.Future[bool] = self._loop.create_future()  # True: it can sign
        self.alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.SubprocessTransport, transport)
        self._stdin = cast(asyncio.WriteTransport, self._transport.get_pipe_transport(0))

    def configure(self, config: bytes) -> None:
        assert self._stdin is not None
        self._stdin.write(_LENGTH.pack(len(config)) + config)

    def request(self, head: bytes, body_hash: bytes) -> asyncio.Future[bytes]:
        future = self._loop.create_future()
        if not self.alive:
            self._sign_here(future, head, body_hash)
            return future
        if not self._queued:
            self._loop.call_soon(self._flush)
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(ANSWER_TIMEOUT_S, self._watch, self._answered)
        self._queued += (_LENGTH.pack(_HASH_BYTES + len(head)), body_hash, head)
        self._waiting.append((future, head, body_hash))
        return future

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        if self.alive and self._stdin is not None and not self._stdin.is_closing():
            self._stdin.write(b"".join(queued))

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if not self.alive:  # lost: what was waiting has been signed here already
            return
        buffer = self._buffer
        buffer += data
        start, size = 0, len(buffer)
        if not self.ready.done():
            if size < 4:
                return
            self.ready.set_result(True)  # the empty frame that says the key is loaded
            start = 4
        while size - start >= 4:
            (length,) = _LENGTH.unpack_from(buffer, start)
            end = start + 4 + length
            if end > size:
                break
            future, head, body_hash = self._waiting.popleft()
            if length == 0:  # the child could not sign it: sign here, and see why
                self._sign_here(future, head, body_hash)
            elif not future.done():  # its compose may have been cancelled meanwhile
                future.set_result(bytes(buffer[start + 4 : end]))
            start = end
            self._answered += 1
        del buffer[:start]

    def _watch(self, answered: int) -> None:
        """ANSWER_TIMEOUT_S after the first request, and again while requests wait: a whole
        period without one answer, while the oldest request waited, means the child hangs;
        it is killed (what waits is then signed here)."""
        self._watchdog = None
        if not self.alive or not self._waiting:
            return
        if self._answered == answered:
            log.warning("dkim_signing_process_hung", waiting=len(self._waiting))
            if self._transport is not None:
                self._transport.kill()
            self._lost()
            return
        self._watchdog = self._loop.call_later(ANSWER_TIMEOUT_S, self._watch, self._answered)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._lost()

    def process_exited(self) -> None:
        self._lost()

    def _lost(self) -> None:
        if not self.alive:
            return
        self.alive = False
        if not self.ready.done():
            self.ready.set_result(False)
        code = self._transport.get_returncode() if self._transport is not None else None
        log.warning("dkim_signing_process_lost", waiting=len(self._waiting), exit_code=code)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            self._sign_here(*self._waiting.popleft())
        if self._transport is not None:
            self._transport.close()  # its pipes; the process has gone (or is killed now)

    def _sign_here(self, future: asyncio.Future[bytes], head: bytes, body_hash: bytes) -> None:
        if future.done():
            return
        try:
            future.set_result(self._fallback.field(head, body_hash))
        except Exception as err:  # the composing task gets the error
            future.set_exception(err)

    @property
    def pid(self) -> int | None:
        return self._transport.get_pid() if self._transport is not None and self.alive else None

    def close(self) -> None:
        self.alive = False
        if not self.ready.done():
            self.ready.set_result(False)
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._transport is not None:
            self._transport.close()  # closes stdin (the child exits), kills it if it lingers


class SigningProcess:
    """A child process making one RSA key's DKIM signatures for the event loop, started at
    the first :meth:`submit`; ``signer`` (the same key) signs whatever it cannot."""

    def __init__(
        self,
        *,
        signer: DkimSigner,
        private_key: bytes,
        selector: str,
        domain: str,
        headers: Sequence[bytes],
    ) -> None:
        self._signer = signer
        self._config = json.dumps(
            {
                "key": private_key.decode("ascii"),
                "selector": selector,
                "domain": domain,
                "headers": [h.decode("ascii") for h in headers],
            }
        ).encode()
        self._channel: _Channel | None = None
        self._starting: asyncio.Lock | None = None
        self._retry_at = 0.0  # after a start that failed: sign inline until then

    async def submit(self, message: bytes) -> asyncio.Future[bytes]:
        """Queue ``message``'s signature (its body is hashed here, now) and return the future
        of its ``DKIM-Signature`` field; ``await`` it after any inline work."""
        head, body_start = split_head(message)
        body_hash = simple_body_hash(message, body_start)
        channel = self._channel
        if channel is None or not channel.alive:
            channel = await self._start()
        if channel is None:  # no signing process for now: sign here
            future = asyncio.get_running_loop().create_future()
            future.set_result(self._signer.field(head, body_hash))
            return future
        return channel.request(head, body_hash)

    @property
    def pid(self) -> int | None:
        """The process id of the running signing process, if one runs."""
        return self._channel.pid if self._channel is not None else None

    async def _start(self) -> _Channel | None:
        """A running signing process, or None while a failed start waits to be retried."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._channel is not None and self._channel.alive:
                return self._channel
            loop = asyncio.get_running_loop()
            if loop.time() < self._retry_at:
                return None
            path = os.environ.get("PYTHONPATH")
            env = {
                **os.environ,
                "PYTHONPATH": _PROJECT_ROOT + (os.pathsep + path if path else ""),
            }
            started = False
            try:
                transport, channel = await loop.subprocess_exec(
                    lambda: _Channel(self._signer),
                    sys.executable,
                    "-m",
                    __name__,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=None,  # the child's own errors go where the dispatcher's go
                    env=env,
                )
            except OSError as err:
                log.warning("dkim_signing_process_not_started", error=str(err)[:200])
            else:
                channel.configure(self._config)
                self._channel = channel
                with contextlib.suppress(TimeoutError):
                    started = await asyncio.wait_for(asyncio.shield(channel.ready), START_TIMEOUT_S)
                if not started:
                    log.warning("dkim_signing_process_not_started", error="no ready frame")
                    channel.close()
            if not started:
                self._retry_at = loop.time() + RETRY_AFTER_S
                return None
            log.info("dkim_signing_process_started", pid=transport.get_pid())
            return channel

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


# --- the child ---------------------------------------------------------------------------


def _read_exactly(fd: int, buffer: bytearray, size: int) -> bool:
    while len(buffer) < size:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return False
        buffer += chunk
    return True


def _write_all(fd: int, parts: list[bytes]) -> None:
    data = memoryview(b"".join(parts))
    while data:
        data = data[os.write(fd, data) :]


def serve(stdin: int = 0, stdout: int = 1) -> None:
    """The child's loop: the configuration frame, then requests until stdin closes."""
    buffer = bytearray()
    if not _read_exactly(stdin, buffer, 4):
        return
    (length,) = _LENGTH.unpack_from(buffer)
    if not _read_exactly(stdin, buffer, 4 + length):
        return
    config = json.loads(bytes(buffer[4 : 4 + length]))
    del buffer[: 4 + length]
    signer = DkimSigner(
        private_key=config["key"].encode("ascii"),
        selector=config["selector"],
        domain=config["domain"],
        headers=[h.encode("ascii") for h in config["headers"]],
    )
    _write_all(stdout, [_LENGTH.pack(0)])  # ready
    while True:
        answers: list[bytes] = []
        start, size = 0, len(buffer)
        while size - start >= 4:
            (length,) = _LENGTH.unpack_from(buffer, start)
            end = start + 4 + length
            if end > size:
                break
            body_hash = bytes(buffer[start + 4 : start + 4 + _HASH_BYTES])
            head = bytes(buffer[start + 4 + _HASH_BYTES : end])
            start = end
            try:
                field = signer.field(head, body_hash)
            except Exception as err:  # the dispatcher signs it and sees why
                print(f"dkim signing process: {err!r}", file=sys.stderr)
                field = b""
            answers += (_LENGTH.pack(len(field)), field)
            if len(answers) >= 2 * _ANSWERS_PER_WRITE:
                _write_all(stdout, answers)
                answers = []
        del buffer[:start]
        if answers:
            _write_all(stdout, answers)
        chunk = os.read(stdin, 1 << 20)
        if not chunk:
            return
        buffer += chunk


if __name__ == "__main__":
    # Ctrl-C in a terminal reaches the whole process group: the dispatcher decides, and the
    # child ends when its stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve()
