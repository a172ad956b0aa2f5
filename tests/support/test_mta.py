"""A scripted test MTA (aiosmtpd over a real socket) that can misbehave on purpose.

Rules are per recipient address or random per message: answer 550 5.1.1 (unknown user),
554 5.7.1 (policy), 421/451 (slow down), 451 once, drop the connection at RCPT, or stall at DATA
past the client's timeout. Every accepted message is kept with its envelope (and the time of a
test's clock, when given), so tests can count copies per recipient and say when each came.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from shared.clock import Clock
from tests.support.ports import free_port


@dataclass
class Accepted:
    mail_from: str
    rcpt: str
    data: bytes
    at: float = field(default_factory=time.time)  # wall clock, when the 250 was given
    clock_at: datetime | None = None  # the test's clock then (``ScriptedHandler.clock``)

    def parsed(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class MtaScript:
    """What the MTA does; every field may be changed while it runs."""

    hard_bounce: set[str] = field(default_factory=set)  # 550 5.1.1 at RCPT
    policy_reject: set[str] = field(default_factory=set)  # 554 5.7.1 at RCPT
    defer: set[str] = field(default_factory=set)  # 451 4.2.0 at RCPT, every time
    defer_once: set[str] = field(default_factory=set)  # 451 4.2.0 at RCPT, the first time only
    throttle_ratio: float = 0.0  # share of RCPTs answered 421/451 (alternating)
    drop_ratio: float = 0.0  # share of RCPTs where the connection is dropped
    stall_data: set[str] = field(default_factory=set)  # stall after DATA, once per address
    stall_seconds: float = 5.0
    seed: int = 7


class ScriptedHandler:
    def __init__(self, script: MtaScript) -> None:
        self.script = script
        self.accepted: list[Accepted] = []
        self.lock = threading.Lock()
        self.random = random.Random(script.seed)
        self.replies: Counter[str] = Counter()
        self._stalled: set[str] = set()
        self._hold_after: int | None = None
        self._admitted = 0
        self._released = threading.Event()
        self.waiting = 0  # messages held at DATA right now (see hold_after)
        # A test's (fake) clock: accepted messages and deferrals are stamped with it too.
        self.clock: Clock | None = None
        self.deferred: list[tuple[str, datetime | None]] = []  # (recipient, clock time) per 451

    def hold_after(self, count: int) -> None:
        """Take ``count`` messages, then keep every later one waiting at DATA, unanswered,
        until :meth:`release`: the test decides when the rest may go, not the clock."""
        with self.lock:
            self._hold_after, self._admitted = count, 0
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def _wait_if_held(self) -> None:
        with self.lock:
            held = self._hold_after is not None and self._admitted >= self._hold_after
            self._admitted += 1
            if held:
                self.waiting += 1
        if not held:
            return
        try:
            await asyncio.to_thread(self._released.wait)  # set from the test's thread
        finally:
            with self.lock:
                self.waiting -= 1

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        script = self.script
        if address in script.hard_bounce:
            return self._reply(f"550 5.1.1 <{address}>: user unknown")
        if address in script.policy_reject:
            return self._reply("554 5.7.1 message refused by policy")
        if address in script.defer or (
            address in script.defer_once and all(a != address for a, _ in self.deferred)
        ):
            with self.lock:
                self.deferred.append((address, self._clock_now()))
            return self._reply("451 4.2.0 mailbox busy, try again later")
        roll = self.random.random()
        if roll < script.drop_ratio:
            self.replies["drop"] += 1
            assert server.transport is not None
            server.transport.close()
            return "421 4.4.2 closing"
        if roll < script.drop_ratio + script.throttle_ratio:
            if self.random.random() < 0.5:
                return self._reply("421 4.7.0 try again later, slow down")
            return self._reply("451 4.7.1 greylisted, try again")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def _clock_now(self) -> datetime | None:
        return self.clock.now() if self.clock is not None else None

    def _reply(self, reply: str) -> str:
        self.replies[reply[:3]] += 1
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._wait_if_held()
        data = envelope.original_content or b""
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.script.stall_data and rcpt not in self._stalled:
                self._stalled.add(rcpt)
                # Keep the message (it "arrived") but answer too late: outcome unknown.
                with self.lock:
                    self.accepted.append(Accepted(str(envelope.mail_from), rcpt, data))
                await asyncio.sleep(self.script.stall_seconds)
                return "250 OK (too late)"
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.accepted.append(
                    Accepted(str(envelope.mail_from), rcpt, data, clock_at=self._clock_now())
                )
        return "250 2.0.0 OK"

    def copies(self) -> Counter[str]:
        with self.lock:
            return Counter(a.rcpt for a in self.accepted)


class ScriptedMta:
    """Runs a :class:`ScriptedHandler` on a free loopback port in a thread."""

    def __init__(self, script: MtaScript | None = None) -> None:
        self.handler = ScriptedHandler(script or MtaScript())
        self._controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=free_port(),
            decode_data=False,
            enable_SMTPUTF8=True,
            ready_timeout=10,
        )

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self._controller.port}"

    def __enter__(self) -> ScriptedMta:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.handler.release()
        self._controller.stop()
