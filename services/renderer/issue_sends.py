"""An issue is an identity, not a file run: which sends an issue has, and whether another may start.

The issue number (with its dates) identifies an issue. Every send request is an
``issue_send`` row (the renderer's table); an issue has at most one ``first`` send, which a
partial unique index enforces, so the second of two ``issue send`` started at once fails its
insert instead of mailing every reader again. Anything after the first send is a deliberate
choice: ``only_new`` (readers who have not received the issue) or ``resend_all`` (everyone,
confirmed by typing the issue number). Test sends (``test``) never count.

The CLI, the editor page, the admin API and the renderer's consumer all go through
:func:`claim` (the consumer through :func:`record_command`), so they refuse for the same
reasons; each surface words "what to do" in its own terms (:class:`Surface`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

import structlog
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from services.renderer.errors import N_, Gettext, RendererError, Wording
from services.renderer.issue import IssueEdition
from services.renderer.store import Sessions
from shared.db.tables import Delivery, IssueSend, Send, SendIntent
from shared.messaging.schemas import SendIntentName

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class IssueIdentity:
    issue_key: str
    number: int
    date_from: date
    date_to: date

    @classmethod
    def of(cls, editions: Mapping[str, IssueEdition]) -> IssueIdentity:
        """The identity of parsed editions (``parse_sources`` already checked they agree)."""
        first = next(iter(editions.values()))
        return cls(first.issue_key, first.number, first.date_from, first.date_to)

    @property
    def label(self) -> str:
        return f"issue {self.number} ({self.date_from.isoformat()} .. {self.date_to.isoformat()})"


@dataclass(frozen=True)
class EarlierSend:
    """A send request of the issue, with what the dispatcher has made of it so far."""

    send_id: str
    intent: str
    requested_at: datetime
    status: str  # the send's status, or "requested" while the dispatcher has not planned it
    date_from: date
    date_to: date
    counts: dict[str, int] = field(default_factory=dict)  # deliveries by status

    @property
    def deliveries(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        return str(self.wording())

    def wording(self) -> Wording:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()))
        detail = (
            Wording.of(
                N_("%(count)s deliveries (%(counts)s)"), count=self.deliveries, counts=counts
            )
            if counts
            else Wording(N_("no deliveries yet"))
        )
        return Wording.of(
            N_(
                "send %(send_id)s (%(intent)s), requested %(when)s UTC, "
                "status %(status)s: %(detail)s"
            ),
            send_id=self.send_id,
            intent=self.intent.replace("_", "-"),
            when=self.requested_at.strftime("%Y-%m-%d %H:%M"),
            status=self.status,
            detail=detail,
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "send_id": self.send_id,
            "intent": self.intent,
            "requested_at": self.requested_at.isoformat(),
            "status": self.status,
            "counts": dict(sorted(self.counts.items())),
        }


class Surface(StrEnum):
    """Where a send is started: each words the choices in its own terms."""

    CLI = "cli"
    EDITOR = "editor"
    API = "api"
    COMMAND = "command"  # a RenderIssue that arrived without a request (the consumer)


_HOW = {
    Surface.CLI: {
        SendIntent.ONLY_NEW: "add --only-new",
        SendIntent.RESEND_ALL: "add --resend-all (you type the issue number to confirm; "
        "scripts pass --yes-resend {number})",
        SendIntent.FIRST: "leave out --only-new and --resend-all",
    },
    # The editor page's choices are worded in the page's language (catalog strings).
    Surface.EDITOR: {
        SendIntent.ONLY_NEW: N_('choose "Only readers who have not received it"'),
        SendIntent.RESEND_ALL: N_('choose "Everyone again" and type %(number)s'),
        SendIntent.FIRST: N_('choose "Send"'),
    },
    Surface.API: {
        SendIntent.ONLY_NEW: 'send "intent": "only_new"',
        SendIntent.RESEND_ALL: 'send "intent": "resend_all" with "confirm_issue": {number}',
        SendIntent.FIRST: 'send "intent": "first"',
    },
    Surface.COMMAND: {
        SendIntent.ONLY_NEW: 'publish "intent": "only_new"',
        SendIntent.RESEND_ALL: 'publish "intent": "resend_all"',
        SendIntent.FIRST: 'publish "intent": "first"',
    },
}


def how_to(surface: Surface, intent: SendIntent, *, number: int) -> str:
    return str(how_to_wording(surface, intent, number=number))


def how_to_wording(surface: Surface, intent: SendIntent, *, number: int) -> Wording:
    """What to do on ``surface`` for ``intent``: the CLI's, API's and command's words are for
    scripts and logs (English); the editor page words its own in its language."""
    text = _HOW[surface][intent]
    if surface == Surface.EDITOR:
        return Wording.of(text, number=number)
    return Wording.text(text.format(number=number))


class SendRefused(RendererError):
    """A send of an issue that its earlier sends rule out, or an unconfirmed choice.

    ``lines`` are the message as codes and values: ``str()`` is English (CLI, admin API),
    :meth:`worded` says it in a page's language.
    """

    def __init__(
        self,
        message: str | Sequence[Wording],
        *,
        earlier: Sequence[EarlierSend] = (),
    ) -> None:
        self.lines = [Wording.text(message)] if isinstance(message, str) else list(message)
        super().__init__("\n".join(str(line) for line in self.lines))
        self.earlier = list(earlier)

    def worded(self, gettext: Gettext | None = None) -> str:
        return "\n".join(line.worded(gettext) for line in self.lines)


class IssueAlreadySent(SendRefused):
    """The issue has a send (running, waiting or finished): a plain send would mail again."""


class SendAlreadyRecorded(IssueAlreadySent):
    """This very send id is on record already: a retried request or a redelivered command."""


class NotSentYet(SendRefused):
    """``only_new`` or ``resend_all`` of an issue that was never sent."""


class ResendNotConfirmed(SendRefused):
    """``resend_all`` without the issue number typed back."""


def refusal(
    identity: IssueIdentity,
    intent: SendIntent,
    earlier: Sequence[EarlierSend],
    *,
    surface: Surface,
    confirm_number: int | None = None,
) -> SendRefused | None:
    """Why this send may not start, or None when it may."""
    if intent == SendIntent.TEST:
        return None
    number = identity.number
    label = Wording.of(
        N_("issue %(number)s (%(date_from)s .. %(date_to)s)"),
        number=number,
        date_from=identity.date_from.isoformat(),
        date_to=identity.date_to.isoformat(),
    )

    def how(choice: SendIntent) -> Wording:
        return how_to_wording(surface, choice, number=number)

    if intent == SendIntent.FIRST and earlier:
        first = earlier[0]
        lines = [
            Wording.of(
                N_("%(issue)s already has %(count)s send(s); the first is %(send)s"),
                issue=label,
                count=len(earlier),
                send=first.wording(),
            )
        ]
        lines += [Wording.of(N_("  also %(send)s"), send=e.wording()) for e in earlier[1:]]
        if (first.date_from, first.date_to) != (identity.date_from, identity.date_to):
            lines.append(
                Wording.of(
                    N_(
                        "  that send had the dates %(date_from)s .. %(date_to)s: if this is a "
                        "new issue, give it a new number"
                    ),
                    date_from=first.date_from,
                    date_to=first.date_to,
                )
            )
        lines.append(
            Wording.of(
                N_(
                    "  to mail only readers who have not received it (new subscribers since, "
                    "failed deliveries): %(how)s"
                ),
                how=how(SendIntent.ONLY_NEW),
            )
        )
        lines.append(
            Wording.of(N_("  to mail every reader again: %(how)s"), how=how(SendIntent.RESEND_ALL))
        )
        return IssueAlreadySent(lines, earlier=earlier)
    if intent in {SendIntent.ONLY_NEW, SendIntent.RESEND_ALL} and not earlier:
        return NotSentYet(
            [
                Wording.of(
                    N_(
                        "%(issue)s has not been sent yet, so there is no one to leave out or "
                        "mail again: %(how)s"
                    ),
                    issue=label,
                    how=how(SendIntent.FIRST),
                )
            ]
        )
    if intent == SendIntent.RESEND_ALL and confirm_number != number:
        typed: object = Wording(N_("nothing")) if confirm_number is None else str(confirm_number)
        return ResendNotConfirmed(
            [
                Wording.of(
                    N_(
                        "mailing every reader of %(issue)s again needs the issue number typed "
                        "back: %(number)s expected, %(typed)s given (%(how)s)"
                    ),
                    issue=label,
                    number=number,
                    typed=typed,
                    how=how(SendIntent.RESEND_ALL),
                )
            ],
            earlier=earlier,
        )
    return None


async def earlier_sends(sessions: Sessions, *, issue_key: str) -> list[EarlierSend]:
    """The issue's non-test send requests, oldest first, with their delivery counts."""
    async with sessions() as session:
        requests = list(
            (
                await session.exec(
                    select(IssueSend)
                    .where(
                        IssueSend.issue_key == issue_key,
                        col(IssueSend.intent) != SendIntent.TEST,
                    )
                    .order_by(col(IssueSend.requested_at), col(IssueSend.send_id))
                )
            ).all()
        )
        if not requests:
            return []
        ids = [r.send_id for r in requests]
        statuses = dict(
            (await session.exec(select(Send.id, Send.status).where(col(Send.id).in_(ids)))).all()
        )
        counts: dict[str, Counter[str]] = {send_id: Counter() for send_id in ids}
        rows = await session.exec(
            select(Delivery.send_id, Delivery.status, func.count())
            .where(col(Delivery.send_id).in_(ids))
            .group_by(col(Delivery.send_id), col(Delivery.status))
        )
        for send_id, status, count in rows.all():
            counts[str(send_id)][str(status)] += int(count)
    return [
        EarlierSend(
            send_id=r.send_id,
            intent=r.intent,
            requested_at=r.requested_at,
            status=statuses.get(r.send_id, "requested"),
            date_from=r.date_from,
            date_to=r.date_to,
            counts=dict(counts[r.send_id]),
        )
        for r in requests
    ]


async def check(
    sessions: Sessions,
    *,
    identity: IssueIdentity,
    intent: SendIntent,
    surface: Surface,
    confirm_number: int | None = None,
) -> None:
    """Refuse early (before rendering and preflight) what :func:`claim` would refuse."""
    if intent == SendIntent.TEST:
        return
    earlier = await earlier_sends(sessions, issue_key=identity.issue_key)
    refused = refusal(identity, intent, earlier, surface=surface, confirm_number=confirm_number)
    if refused is not None:
        raise refused


async def claim(
    sessions: Sessions,
    *,
    identity: IssueIdentity,
    send_id: str,
    intent: SendIntent,
    segments: Sequence[str],
    surface: Surface,
    confirm_number: int | None = None,
) -> None:
    """Record the send request, or raise :class:`SendRefused` saying why it may not start.

    The check and the insert are not one atomic step, but the partial unique index is: of two
    first sends of one issue started at once, one insert fails, and that one is refused. The
    send's own id never counts as an earlier send: a second copy of the same request (the
    command redelivered while its first delivery is recording it) must be told apart from
    another send of the issue, so it ends in :class:`SendAlreadyRecorded`, whichever of the
    two commits first.
    """
    if intent != SendIntent.TEST:
        earlier = await _earlier_than(sessions, identity=identity, send_id=send_id)
        refused = refusal(identity, intent, earlier, surface=surface, confirm_number=confirm_number)
        if refused is not None:
            raise refused
    row = IssueSend(
        send_id=send_id,
        issue_key=identity.issue_key,
        issue_number=identity.number,
        date_from=identity.date_from,
        date_to=identity.date_to,
        intent=intent,
        segments=",".join(segments),
        origin=surface,
    )
    async with sessions() as session:
        session.add(row)
        try:
            await session.commit()
        except IntegrityError as err:
            await session.rollback()
            # The insert lost to a concurrent one, which has committed by now (PostgreSQL and
            # SQLite report a unique violation only once the other writer is done).
            if await _recorded(sessions, send_id=send_id, identity=identity):
                raise SendAlreadyRecorded(f"send {send_id} was already requested") from err
            earlier = await _earlier_than(sessions, identity=identity, send_id=send_id)
            refused = refusal(
                identity, intent, earlier, surface=surface, confirm_number=confirm_number
            )
            log.warning("issue_send_refused_concurrent", issue_key=identity.issue_key)
            raise (refused or IssueAlreadySent(f"{identity.label} was sent meanwhile")) from err
    log.info(
        "issue_send_claimed",
        issue_key=identity.issue_key,
        send_id=send_id,
        intent=str(intent),
        origin=str(surface),
    )


async def release(sessions: Sessions, *, send_id: str) -> None:
    """Forget a request whose command never reached the broker (nothing was sent)."""
    async with sessions() as session:
        row = await session.get(IssueSend, send_id)
        if row is not None:
            await session.delete(row)
            await session.commit()


async def record_command(
    sessions: Sessions,
    *,
    identity: IssueIdentity,
    send_id: str,
    intent: SendIntent,
    segments: Sequence[str],
) -> None:
    """The consumer's side: a command's request is normally recorded already (by the surface
    that published it); one that arrives without it is recorded now, under the same rules.

    Idempotent for one send id: a redelivered copy of the command, even one handled while its
    first delivery is still recording the request, finds the request and goes on.
    """
    if await _recorded(sessions, send_id=send_id, identity=identity):
        return
    try:
        await claim(
            sessions,
            identity=identity,
            send_id=send_id,
            intent=intent,
            segments=segments,
            surface=Surface.COMMAND,
            confirm_number=identity.number,  # a command cannot be asked to confirm
        )
    except SendAlreadyRecorded:
        log.info("issue_send_recorded_concurrently", send_id=send_id)


async def _recorded(sessions: Sessions, *, send_id: str, identity: IssueIdentity) -> bool:
    """Whether this send id is on record (for this issue: the same id for another issue is a
    malformed request, refused rather than taken for a copy)."""
    async with sessions() as session:
        row = await session.get(IssueSend, send_id)
    if row is None:
        return False
    if row.issue_key != identity.issue_key:
        raise SendRefused(f"send {send_id} is already a send of {row.issue_key}")
    return True


async def _earlier_than(
    sessions: Sessions, *, identity: IssueIdentity, send_id: str
) -> list[EarlierSend]:
    earlier = await earlier_sends(sessions, issue_key=identity.issue_key)
    return [e for e in earlier if e.send_id != send_id]


_COMMAND_INTENTS: dict[SendIntent, SendIntentName] = {
    SendIntent.FIRST: "first",
    SendIntent.ONLY_NEW: "only_new",
    SendIntent.RESEND_ALL: "resend_all",
    SendIntent.TEST: "first",  # a test send is one with test_to
}


def command_intent(intent: SendIntent) -> SendIntentName:
    return _COMMAND_INTENTS[intent]


def intent_of_command(intent: SendIntentName, *, test: bool) -> SendIntent:
    return SendIntent.TEST if test else SendIntent(intent)


def intent_of(*, only_new: bool, resend_all: bool, test: bool) -> SendIntent:
    """The send's intent from the surface's choices; raise :class:`SendRefused` for both."""
    if test:
        if only_new or resend_all:
            raise SendRefused("a test send goes to one address: leave out only-new and resend-all")
        return SendIntent.TEST
    if only_new and resend_all:
        raise SendRefused("choose one of only-new (readers without it) and resend-all (everyone)")
    if only_new:
        return SendIntent.ONLY_NEW
    return SendIntent.RESEND_ALL if resend_all else SendIntent.FIRST
