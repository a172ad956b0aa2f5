"""The operators' page, ``/admin``: sends in progress, queues, errors, dead letters, reputation.

Behind the admin token: a bearer header, or the session cookie that the small login form on
``/admin`` sets (HttpOnly, SameSite=Strict; a signed, expiring session id, never the token,
revoked by logout; wrong tokens throttled per client: ``admin_sessions.py``). The page
refreshes itself: a small script (``/admin/ops.js``) fetches the rendered sections
(``/admin/sections``) every few seconds; the
same data is served as JSON at ``/admin/summary.json``.

Queue figures come from :mod:`shared.queue_stats` (management API, else passive declares);
this router's lifespan also keeps ``newsletter_queue_messages`` / ``newsletter_queue_consumers``
fresh for ``/metrics``. Dead letters are peeked (fetched and returned to the queue by closing
the channel), never consumed, and at most every :data:`DEAD_LETTER_PEEK_EVERY_S` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Annotated, Any

import aio_pika
import structlog
from fastapi import APIRouter, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from prometheus_client import REGISTRY, CollectorRegistry

from services.subscription.admin_sessions import (
    COOKIE,
    LOGIN_WINDOW_S,
    SESSION_MAX_AGE_S,
    admin_sessions,
)
from services.subscription.dependencies import AdminDep, SessionDep, SettingsDep, require_admin
from services.subscription.routes.bounces import ReportCounts, kept_report_counts
from shared.messaging.topology import DEAD_LETTER_QUEUE
from shared.ops_summary import (
    DeliveryError,
    Reputation,
    SendProgress,
    recent_errors,
    reputation,
    send_progress,
)
from shared.queue_stats import (
    QueueMetrics,
    QueueSnapshot,
    QueueStatsError,
    QueueStatsReader,
    QueueStatsSettings,
    export_periodically,
)
from shared.settings import Settings
from shared.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

QUEUE_CACHE_S = 2.0
DEAD_LETTER_PEEK_EVERY_S = 30.0
DEAD_LETTER_PEEK_LIMIT = 10
DEFAULT_REFRESH_S = 5
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class DeadLetter:
    message_type: str
    message_id: str
    routing_key: str
    reason: str
    from_queue: str
    deaths: int
    died_at: str

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class OpsState:
    """What the ops routes keep between requests (one per app, on ``app.state.ops``)."""

    settings: Settings
    management_url: str = ""
    reader: QueueStatsReader | None = None
    registry: CollectorRegistry = REGISTRY
    metrics: QueueMetrics = field(init=False)
    snapshot: QueueSnapshot | None = None
    queue_error: str = ""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    dead_letters_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.metrics = QueueMetrics.on(self.registry)

    def queue_reader(self) -> QueueStatsReader:
        if self.reader is None:
            self.reader = QueueStatsReader(
                amqp_url=self.settings.amqp_url, management_url=self.management_url
            )
        return self.reader

    async def queues(self) -> QueueSnapshot | None:
        async with self.lock:
            fresh = self.snapshot and time.monotonic() - self.snapshot.taken_at < QUEUE_CACHE_S
            if not fresh:
                try:
                    self.snapshot = await self.queue_reader().read()
                    self.queue_error = ""
                    self.metrics.update(self.snapshot)
                except QueueStatsError as err:
                    self.queue_error = str(err)
            return self.snapshot

    async def peek_dead_letters(self) -> list[DeadLetter]:
        """Look at the oldest dead letters without taking them (at most every 30 s)."""
        if time.monotonic() - self.dead_letters_at < DEAD_LETTER_PEEK_EVERY_S:
            return self.dead_letters
        self.dead_letters_at = time.monotonic()
        try:
            connection = await self.queue_reader().connection()
            channel = await connection.channel(publisher_confirms=False)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as err:
            log.warning("dead_letter_peek_failed", error=str(err))
            return self.dead_letters
        found: list[DeadLetter] = []
        try:
            queue = await channel.get_queue(DEAD_LETTER_QUEUE, ensure=True)
            for _ in range(DEAD_LETTER_PEEK_LIMIT):
                message = await queue.get(no_ack=False, fail=False, timeout=5)
                if message is None:
                    break
                found.append(_dead_letter(message))
        except aio_pika.exceptions.AMQPError as err:
            log.warning("dead_letter_peek_failed", error=str(err))
        finally:
            # Closing the channel returns every unacknowledged message to the queue.
            with contextlib.suppress(aio_pika.exceptions.AMQPError, RuntimeError):
                await channel.close()
        self.dead_letters = found
        return found

    async def aclose(self) -> None:
        if self.reader is not None:
            await self.reader.aclose()
            self.reader = None


def _dead_letter(message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
    headers: dict[str, Any] = dict(message.headers or {})
    deaths = headers.get("x-death") or []
    # The broker puts the latest death first: why the message is here now.
    first: dict[str, Any] = dict(deaths[0]) if deaths and isinstance(deaths[0], dict) else {}
    keys = first.get("routing-keys") or [message.routing_key or ""]
    died_at = first.get("time")
    return DeadLetter(
        message_type=str(message.type or ""),
        message_id=str(message.message_id or ""),
        routing_key=str(keys[0] if keys else ""),
        reason=str(first.get("reason") or headers.get("x-first-death-reason") or ""),
        from_queue=str(first.get("queue") or headers.get("x-first-death-queue") or ""),
        deaths=int(sum(int(dict(d).get("count", 1)) for d in deaths if isinstance(d, dict))),
        died_at=died_at.isoformat() if isinstance(died_at, datetime) else str(died_at or ""),
    )


@contextlib.asynccontextmanager
async def ops_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Keep the queue gauges fresh for ``/metrics`` while the app runs; close what was opened."""
    settings: Settings | None = getattr(app.state, "settings", None)
    if settings is None:  # an app without the subscription lifespan: nothing to watch
        yield
        return
    stats_settings = QueueStatsSettings()
    state = OpsState(
        settings=settings,
        management_url=stats_settings.rabbitmq_management_url,
        registry=getattr(app.state, "registry", REGISTRY),
    )
    app.state.ops = state
    stop = asyncio.Event()
    exporter = asyncio.create_task(
        export_periodically(
            reader=state.queue_reader(),
            metrics=state.metrics,
            interval_s=stats_settings.queue_stats_interval_s,
            stop=stop,
        )
    )
    try:
        yield
    finally:
        stop.set()
        await cancel_and_wait(exporter)
        await state.aclose()


router = APIRouter(lifespan=ops_lifespan)


def _state(request: Request, settings: Settings) -> OpsState:
    state: OpsState | None = getattr(request.app.state, "ops", None)
    if state is None:
        state = OpsState(
            settings=settings,
            management_url=QueueStatsSettings().rabbitmq_management_url,
            registry=getattr(request.app.state, "registry", REGISTRY),
        )
        request.app.state.ops = state
    return state


@dataclass
class Summary:
    sends: list[SendProgress]
    errors: list[DeliveryError]
    reputation: list[Reputation]
    queues: QueueSnapshot | None
    queue_error: str
    dead_letters: list[DeadLetter]
    generated_at: datetime
    kept_reports: ReportCounts | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "generated_at": self.generated_at.isoformat(),
            "sends": [s.as_dict() for s in self.sends],
            "errors": [e.as_dict() for e in self.errors],
            "reputation": [r.as_dict() for r in self.reputation],
            "queues": {
                "source": self.queues.source if self.queues else None,
                "error": self.queue_error,
                "queues": [q.__dict__ for q in self.queues.queues] if self.queues else [],
            },
            "dead_letters": [d.as_dict() for d in self.dead_letters],
            "kept_reports": self.kept_reports.model_dump() if self.kept_reports else None,
        }


async def _summary(request: Request, settings: Settings, session: SessionDep) -> Summary:
    state = _state(request, settings)
    sends = await send_progress(session=session)
    errors = await recent_errors(session=session)
    rates = [await reputation(session=session, window_hours=h) for h in (24, 24 * 7)]
    queues = await state.queues()
    dead = state.dead_letters
    dead_stat = queues.get(DEAD_LETTER_QUEUE) if queues else None
    if dead_stat is not None and dead_stat.ready:
        dead = await state.peek_dead_letters()
    elif dead_stat is not None:
        dead = state.dead_letters = []
    return Summary(
        sends=sends,
        errors=errors,
        reputation=rates,
        queues=queues,
        queue_error=state.queue_error,
        dead_letters=dead,
        generated_at=datetime.now(UTC),
        kept_reports=await kept_report_counts(session, hours=24),
    )


@router.get("/admin", response_class=HTMLResponse, include_in_schema=False)
async def admin_page(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    refresh: Annotated[int, Query(ge=1, le=300)] = DEFAULT_REFRESH_S,
) -> Response:
    try:
        require_admin(request, settings)
    except HTTPException:
        return HTMLResponse(_login_page(error=""), status_code=401, headers=SECURITY_HEADERS)
    summary = await _summary(request, settings, session)
    return HTMLResponse(_page(summary, refresh_s=refresh), headers=SECURITY_HEADERS)


@router.get("/admin/sections", response_class=HTMLResponse, include_in_schema=False)
async def admin_sections(
    request: Request, settings: SettingsDep, session: SessionDep, _: AdminDep
) -> Response:
    summary = await _summary(request, settings, session)
    return HTMLResponse(_sections(summary), headers=SECURITY_HEADERS)


@router.get("/admin/summary.json")
async def admin_summary(
    request: Request, settings: SettingsDep, session: SessionDep, _: AdminDep
) -> JSONResponse:
    """Everything the ops page shows, as JSON (for scripts and dashboards)."""
    summary = await _summary(request, settings, session)
    return JSONResponse(summary.as_dict(), headers={"cache-control": "no-store"})


@router.post("/admin/login", include_in_schema=False)
async def admin_login(
    request: Request, settings: SettingsDep, token: Annotated[str, Form()] = ""
) -> Response:
    sessions = admin_sessions(request, settings)
    client = request.client.host if request.client else "unknown"
    if sessions.login_failures.blocked(client):
        log.warning("admin_login_throttled")
        return HTMLResponse(
            _login_page(error="Too many wrong tokens; try again later."),
            status_code=429,
            headers={**SECURITY_HEADERS, "Retry-After": str(int(LOGIN_WINDOW_S))},
        )
    expected = settings.admin_token.get_secret_value()
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        sessions.login_failures.record(client)  # counts this wrong token
        log.info("admin_login_refused")
        return HTMLResponse(
            _login_page(error="That token is not right."),
            status_code=401,
            headers=SECURITY_HEADERS,
        )
    response = RedirectResponse("/admin", status_code=303)
    response.set_cookie(
        COOKIE,
        sessions.open(),
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=settings.public_url.startswith("https://"),
        path="/",
    )
    log.info("admin_login")
    return response


@router.post("/admin/logout", include_in_schema=False)
async def admin_logout(request: Request, settings: SettingsDep) -> Response:
    admin_sessions(request, settings).revoke(request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/admin", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/admin/ops.js", include_in_schema=False)
async def admin_script() -> Response:
    return Response(_SCRIPT, media_type="text/javascript", headers={"cache-control": "max-age=300"})


# --- rendering ---------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f6f7f9}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:.8rem 1rem;
margin-bottom:1rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #eef0f3}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;vertical-align:middle;background:#e6e9ef;border-radius:3px;
height:.7rem;width:8rem;overflow:hidden;margin-right:.4rem}
.bar>span{display:block;height:100%;background:#2f7d4f}
.muted{color:#6b7280}.warn{color:#a15c00}.bad{color:#b42318}.ok{color:#2f7d4f}
header{display:flex;justify-content:space-between;align-items:baseline}
form.inline{display:inline}
"""

_SCRIPT = """
(function () {
  var body = document.body;
  var every = parseInt(body.getAttribute('data-refresh-s') || '5', 10) * 1000;
  var target = document.getElementById('sections');
  var status = document.getElementById('refresh-status');
  function refresh() {
    fetch('/admin/sections', {credentials: 'same-origin', cache: 'no-store'})
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); throw new Error('signed out'); }
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.text();
      })
      .then(function (html) {
        target.innerHTML = html;
        status.textContent = 'updated ' + new Date().toLocaleTimeString();
        status.className = 'muted';
      })
      .catch(function (err) {
        status.textContent = 'refresh failed: ' + err.message;
        status.className = 'bad';
      })
      .finally(function () { window.setTimeout(refresh, every); });
  }
  window.setTimeout(refresh, every);
})();
"""


def _html(title: str, body: str, *, body_attrs: str = "") -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body{body_attrs}>{body}</body></html>"
    )


def _login_page(*, error: str) -> str:
    message = f'<p class="bad" role="alert">{escape(error)}</p>' if error else ""
    return _html(
        "Sign in - newsletter operations",
        "<h1>Newsletter operations</h1>"
        "<section><p>Enter the admin token (NEWSLETTER_ADMIN_TOKEN).</p>"
        f"{message}"
        '<form method="post" action="/admin/login">'
        '<label for="token">Admin token</label> '
        '<input id="token" name="token" type="password" autocomplete="current-password" '
        "required> "
        '<button type="submit">Sign in</button></form></section>',
    )


def _page(summary: Summary, *, refresh_s: int) -> str:
    return _html(
        "Newsletter operations",
        "<header><h1>Newsletter operations</h1><div>"
        f'<span id="refresh-status" class="muted">refreshes every {refresh_s} s</span> '
        '<form class="inline" method="post" action="/admin/logout">'
        '<button type="submit">Sign out</button></form></div></header>'
        f'<div id="sections">{_sections(summary)}</div>'
        f'<noscript><meta http-equiv="refresh" content="{refresh_s}"></noscript>'
        '<script src="/admin/ops.js" defer></script>',
        body_attrs=f' data-refresh-s="{refresh_s}"',
    )


def _sections(summary: Summary) -> str:
    return (
        _sends_section(summary.sends)
        + _queues_section(summary.queues, summary.queue_error)
        + _errors_section(summary.errors)
        + _dead_letters_section(summary.queues, summary.dead_letters)
        + _reputation_section(summary.reputation)
        + _kept_reports_section(summary.kept_reports)
        + f'<p class="muted">generated {escape(summary.generated_at.strftime("%H:%M:%S"))} UTC'
        "</p>"
    )


_PROGRESS_COLUMNS = (
    "sent", "deferred", "bounced", "failed", "unknown", "sending", "queued", "pending",
)  # fmt: skip


def _sends_section(sends: list[SendProgress]) -> str:
    if not sends:
        return '<section id="sends"><h2>Sends</h2><p class="muted">No sends yet.</p></section>'
    parts = ['<section id="sends"><h2>Sends</h2>']
    for send in sends:
        state = "ok" if send.status == "done" else "warn" if send.in_progress else "muted"
        status = "planning…" if send.planning else send.status
        # A test send is marked in every view and never counted with real sends.
        if send.is_test:
            kind = f'<span class="test-send warn">TEST to {escape(send.test_to or "?")}</span> '
        elif send.intent != "first":
            kind = f'<span class="muted">{escape(send.intent.replace("_", "-"))}</span> '
        else:
            kind = ""
        parts.append(
            f'<h3 data-send-id="{escape(send.send_id)}" data-test="{str(send.is_test).lower()}">'
            f"{escape(send.issue_key)} {kind}"
            f'<span class="{state}">{escape(status)}</span> '
            f'<span class="muted">{escape(send.send_id)} · started '
            f"{escape(send.created_at.strftime('%Y-%m-%d %H:%M'))} UTC</span></h3>"
        )
        head = "".join(f'<th class="n">{c}</th>' for c in _PROGRESS_COLUMNS)
        parts.append(
            f'<table class="progress"><tr><th>language</th><th>progress</th>{head}'
            '<th class="n">other</th><th class="n">total</th><th class="n">rate</th>'
            '<th class="n">time left</th></tr>'
        )
        for lang in send.languages:
            shown = sum(lang.counts.get(c, 0) for c in _PROGRESS_COLUMNS)
            cells = "".join(
                f'<td class="n">{lang.counts.get(c, 0)}</td>' for c in _PROGRESS_COLUMNS
            )
            parts.append(
                f'<tr data-language="{escape(lang.language)}"><td>{escape(lang.language)}</td>'
                f'<td><div class="bar" title="{lang.percent:.1f} %">'
                f'<span style="width:{lang.percent:.1f}%"></span></div>'
                f'<span class="pct">{lang.percent:.0f} %</span></td>'
                f'{cells}<td class="n">{lang.total - shown}</td>'
                f'<td class="n total">{lang.total}</td>'
                f'<td class="n rate">{_per_minute(lang.rate_per_min)}</td>'
                f'<td class="n eta">{_duration(lang.eta_s) if send.in_progress else "-"}</td></tr>'
            )
        parts.append("</table>")
        parts.append(_reasons(send))
    parts.append("</section>")
    return "".join(parts)


def _reasons(send: SendProgress) -> str:
    """The top deferral and failure reasons of a send: grouped SMTP replies with counts."""
    parts = []
    for label, statuses in (
        ("deferred", ("deferred",)),
        ("failed", ("failed", "bounced", "unknown")),
    ):
        top = send.top(*statuses)
        if not top:
            continue
        items = "".join(
            f'<li><span class="n">{r.count}×</span> {escape(r.status)}: '
            f"<code>{escape(r.reply)}</code> "
            f'<span class="muted">{escape(", ".join(f"{d} {n}" for d, n in r.domains))}</span>'
            "</li>"
            for r in top
        )
        parts.append(
            f'<p class="reasons-title">top {label} reasons</p><ul class="reasons">{items}</ul>'
        )
    return "".join(parts)


def _per_minute(rate: float) -> str:
    return f"{rate:.1f}/min" if rate < 10 else f"{rate:.0f}/min"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "stalled"
    if seconds == 0:
        return "done"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _queues_section(snapshot: QueueSnapshot | None, error: str) -> str:
    parts = ['<section id="queues"><h2>Queues</h2>']
    if error:
        parts.append(f'<p class="bad">{escape(error)}</p>')
    if snapshot is None:
        parts.append("</section>")
        return "".join(parts)
    parts.append(
        '<table><tr><th>queue</th><th class="n">ready</th><th class="n">unacked</th>'
        '<th class="n">consumers</th><th class="n">in/s</th><th class="n">acked/s</th>'
        '<th class="n">depth/s</th></tr>'
    )
    for q in snapshot.queues:
        if not q.exists:
            parts.append(
                f'<tr data-queue="{escape(q.name)}"><td>{escape(q.name)}</td>'
                '<td class="n bad" colspan="6">missing</td></tr>'
            )
            continue
        idle = (
            ' class="bad"'
            if q.consumers == 0 and (q.ready or 0) > 0 and not q.name.startswith("dispatcher.retry")
            else ""
        )
        rates = "".join(
            f'<td class="n">{"-" if r is None else f"{r:.1f}"}</td>'
            for r in (q.publish_rate, q.ack_rate, q.depth_rate)
        )
        parts.append(
            f'<tr data-queue="{escape(q.name)}"{idle}><td>{escape(q.name)}</td>'
            f'<td class="n ready">{_count(q.ready)}</td><td class="n">{_count(q.unacked)}</td>'
            f'<td class="n">{_count(q.consumers)}</td>{rates}</tr>'
        )
    source = {
        "management": "RabbitMQ management API",
        "rabbitmqctl": "rabbitmqctl",
        "amqp": "passive declares (no unacked counts without the management plugin)",
    }[snapshot.source]
    parts.append(f'</table><p class="muted">source: {source}</p></section>')
    return "".join(parts)


def _errors_section(errors: list[DeliveryError]) -> str:
    parts = ['<section id="errors"><h2>Recent delivery errors</h2>']
    if not errors:
        parts.append('<p class="muted">None.</p></section>')
        return "".join(parts)
    parts.append(
        "<table><tr><th>when (UTC)</th><th>status</th><th>language</th><th>domain</th>"
        '<th class="n">attempts</th><th>SMTP reply</th><th>send</th></tr>'
    )
    for e in errors:
        reply = f"{e.smtp_code or ''} {e.smtp_reply}".strip()
        parts.append(
            f'<tr data-delivery-id="{e.delivery_id}">'
            f"<td>{escape(e.updated_at.strftime('%m-%d %H:%M:%S'))}</td>"
            f'<td class="{"warn" if e.status == "deferred" else "bad"}">{escape(e.status)}</td>'
            f"<td>{escape(e.language)}</td><td>{escape(e.domain)}</td>"
            f'<td class="n">{e.attempts}</td><td>{escape(reply)}</td>'
            f"<td>{escape(e.send_id or e.kind)}</td></tr>"
        )
    parts.append("</table></section>")
    return "".join(parts)


def _dead_letters_section(snapshot: QueueSnapshot | None, letters: list[DeadLetter]) -> str:
    stat = snapshot.get(DEAD_LETTER_QUEUE) if snapshot else None
    waiting = _count(stat.ready) if stat else "?"
    parts = [
        '<section id="dead-letters"><h2>Dead letters</h2>'
        f'<p><strong class="{"bad" if stat and stat.ready else "ok"}" id="dead-letter-count">'
        f"{waiting}</strong> waiting in {DEAD_LETTER_QUEUE}. Replay with "
        "<code>newsletter dlq</code> (see docs/operations.md).</p>"
    ]
    if letters:
        parts.append(
            "<table><tr><th>type</th><th>from queue</th><th>reason</th><th>routing key</th>"
            '<th class="n">deaths</th><th>when</th><th>message id</th></tr>'
        )
        for d in letters:
            parts.append(
                f"<tr><td>{escape(d.message_type)}</td><td>{escape(d.from_queue)}</td>"
                f"<td>{escape(d.reason)}</td><td>{escape(d.routing_key)}</td>"
                f'<td class="n">{d.deaths}</td><td>{escape(d.died_at)}</td>'
                f"<td>{escape(d.message_id)}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</section>")
    return "".join(parts)


def _reputation_section(windows: list[Reputation]) -> str:
    parts = [
        '<section id="reputation"><h2>Bounces and complaints</h2><table><tr><th>window</th>'
        '<th class="n">sent</th><th class="n">hard bounces</th><th class="n">hard-bounce rate</th>'
        '<th class="n">complaints</th><th class="n">complaint rate</th><th>by class</th>'
        "<th>top domains</th></tr>"
    ]
    for r in windows:
        label = f"{r.window_hours} h" if r.window_hours < 48 else f"{r.window_hours // 24} days"
        hard = "bad" if r.hard_bounce_rate > 0.02 else "ok"
        complaint = "bad" if r.complaint_rate > 0.001 else "ok"
        classes = ", ".join(f"{escape(k)} {v}" for k, v in sorted(r.by_class.items())) or "-"
        domains = ", ".join(f"{escape(d)} {n}" for d, n in r.top_domains) or "-"
        parts.append(
            f'<tr data-window-hours="{r.window_hours}"><td>{label}</td>'
            f'<td class="n">{r.sent}</td><td class="n">{r.hard_bounces}</td>'
            f'<td class="n {hard}">{100 * r.hard_bounce_rate:.2f} %</td>'
            f'<td class="n">{r.complaints}</td>'
            f'<td class="n {complaint}">{100 * r.complaint_rate:.3f} %</td>'
            f"<td>{classes}</td><td>{domains}</td></tr>"
        )
    parts.append(
        '</table><p class="muted">Keep hard bounces under 2 % and complaints under 0.1 % '
        "(Gmail and Yahoo require under 0.3 %).</p></section>"
    )
    return "".join(parts)


def _kept_reports_section(counts: ReportCounts | None) -> str:
    if counts is None:
        return ""
    unmatched = "bad" if counts.unmatched else "ok"
    return (
        '<section id="kept-reports"><h2>Reports that changed nobody</h2><table><tr>'
        '<th>window</th><th class="n">unmatched</th><th class="n">unreadable</th></tr>'
        f'<tr><td>{counts.hours} h</td><td class="n {unmatched}" data-kept="unmatched">'
        f'{counts.unmatched}</td><td class="n" data-kept="unreadable">{counts.unreadable}</td>'
        '</tr></table><p class="muted">Reports to role addresses (abuse@, postmaster@, ...) '
        "or webhook events that name a reader but no delivery of ours are never applied; "
        "see <code>GET /api/bounces/reports</code>.</p></section>"
    )


__all__ = ["OpsState", "ops_lifespan", "router"]
