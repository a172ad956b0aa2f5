"""Admin API for issues, with ``Authorization: Bearer <NEWSLETTER_ADMIN_TOKEN>``.

``GET /admin/api/issues``; ``GET``/``PUT /admin/api/issues/{name}`` (``{"sources": {lang: text}}``;
optional query ``segments=en,ru`` and ``fallback=be=ru``) answers the readiness verdict (``ready``,
``problems`` as ``file:line:column: …``, ``warnings``, ``plan``, the matrix);
``POST /admin/api/issues/{name}/sends`` (``segments``, ``fallbacks``, ``test_to``, ``confirm``,
``intent``, ``confirm_issue``) answers the segments and their sizes until ``"confirm": true``
(or a test send) starts the send (202 with ``send_id``), like the editor page's confirmation
step.

Scheduling (issue 17): a send request may carry ``"at"`` (``"2026-12-07 09:00"``), ``"tz"``
(``"Europe/Minsk"``) and ``"local_time"`` (``"09:00"``); it is rendered and checked now and
starts then. ``GET /admin/api/sends[?status=scheduled]`` lists sends (read from the
dispatcher's table); ``POST /admin/api/sends/{id}/cancel`` and ``.../reschedule``
(``{"at", "tz"}``) answer 202 and the dispatcher applies them (its row), until the send starts.

An issue goes out once: a send of an issue that already has one answers 409 with the earlier
sends and what to do. ``"intent": "only_new"`` mails readers who have not received it,
``"intent": "resend_all"`` with ``"confirm_issue": <the issue number>`` mails everyone again.
A body that is not a JSON object of that shape (broken, empty, nested past the parser's limit,
wrong types, lone surrogates) answers 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.renderer import send_schedules
from services.renderer.errors import IssueFormatError, IssueNotReady, RendererError
from services.renderer.issue_sends import IssueAlreadySent, SendRefused, Surface
from services.renderer.readiness import verdict
from services.renderer.sending import parse_fallbacks, parse_schedule, parse_segments
from services.renderer.web_desk import WebDesk
from shared.clock import SYSTEM_CLOCK
from shared.db.tables import SendIntent
from shared.messaging.schemas import SendControlled, SendSchedule
from shared.messaging.topology import SEND_CONTROLLED
from shared.rate_limit import request_client_key
from shared.token_budget import TokenCheck, WrongTokenBudget, bearer_token

log = structlog.get_logger(__name__)


class AdminApi(WebDesk):
    """The editor page's actions as JSON."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._wrong_tokens = WrongTokenBudget(limit=self.settings.admin_api_failures_allowed)

    def routes(self) -> list[Route]:
        return [
            Route("/admin/api/issues", self.api_list),
            Route("/admin/api/issues/{name}", self.api_issue, methods=["GET", "PUT"]),
            Route("/admin/api/issues/{name}/sends", self.api_send, methods=["POST"]),
            Route("/admin/api/sends", self.api_sends),
            Route("/admin/api/sends/{send_id}/{action}", self.api_control, methods=["POST"]),
        ]

    async def api_sends(self, request: Request) -> Response:
        """``GET /admin/api/sends[?status=scheduled]``: sends newest first (read-only)."""
        if (refused := self._refusal(request)) is not None:
            return refused
        statuses = request.query_params.getlist("status")
        found = await send_schedules.listing(self.sessions, statuses=statuses)
        return JSONResponse({"sends": found})

    async def api_control(self, request: Request) -> Response:
        """``POST /admin/api/sends/{id}/cancel`` or ``.../reschedule`` (``{"at", "tz"}``):
        checked here, applied by the dispatcher (its row), 202."""
        if (refused := self._refusal(request)) is not None:
            return refused
        action = request.path_params["action"]
        send_id = request.path_params["send_id"]
        if action not in {"cancel", "reschedule"}:
            return JSONResponse({"detail": "the action is cancel or reschedule"}, 404)
        status = await send_schedules.status_of(self.sessions, send_id=send_id)
        if status is None:
            return JSONResponse({"detail": f"no send {send_id}"}, 404)
        start: tuple[datetime | None, str | None] = (None, None)
        if action == "reschedule":
            found = await self._new_start(request)
            if isinstance(found, Response):
                return found
            start = found
        movable = (
            {"scheduled"}
            if action == "reschedule"
            else {"scheduled", "planning", "running", "paused"}
        )
        if status not in movable:
            return JSONResponse(
                {"detail": f"send {send_id} is {status}: too late to {action}"}, 409
            )
        await self.publisher.publish_event(
            SendControlled(
                send_id=send_id, action=action, start_at=start[0], time_zone=start[1], apply=True
            ),
            routing_key=SEND_CONTROLLED,
        )
        return JSONResponse({"send_id": send_id, "action": action, "status": status}, 202)

    async def _new_start(self, request: Request) -> tuple[datetime | None, str | None] | Response:
        """The reschedule body ``{"at": "2026-12-07 09:00", "tz": "Europe/Minsk"}`` as a UTC
        start and its zone, or a 422 answer."""
        payload = await self._object(request)
        if isinstance(payload, Response):
            return payload
        at, tz = payload.get("at"), payload.get("tz")
        if not isinstance(at, str) or (tz is not None and not isinstance(tz, str)):
            return JSONResponse({"detail": '"at" (and "tz") must be strings'}, 422)
        try:
            schedule = parse_schedule(at=at, tz=tz, local_time=None, clock=SYSTEM_CLOCK)
        except RendererError as err:
            return JSONResponse({"detail": str(err)}, 422)
        return (schedule.start_at if schedule else None), tz

    def _refusal(self, request: Request) -> Response | None:
        """None for the right bearer token; else 401, or 429 once this client has spent its
        budget of wrong tokens (:mod:`shared.token_budget`; the right token waits then too)."""
        header = request.headers.get("authorization", "")
        client = request_client_key(request)
        if header:
            expected = self.settings.admin_token.get_secret_value()
            checked = self._wrong_tokens.check(client, bearer_token(header), expected)
            if checked is TokenCheck.ACCEPTED:
                return None
            if checked is TokenCheck.THROTTLED:
                log.warning("admin_api_throttled")
                retry = str(self._wrong_tokens.retry_after_s(client))
                return JSONResponse(
                    {"detail": "too many wrong tokens from this client"},
                    status_code=429,
                    headers={"Retry-After": retry},
                )
            log.info("admin_api_token_refused")
        return JSONResponse(
            {"detail": "bearer token required"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @staticmethod
    async def _object(request: Request) -> dict[str, Any] | Response:
        """The JSON object in the body, or a 422 answer: broken, empty or non-UTF-8 JSON and
        JSON nested deeper than the parser's recursion limit used to answer 500."""
        try:
            payload = await request.json()
        except (ValueError, RecursionError):
            return JSONResponse({"detail": "the body must be a JSON object"}, 422)
        if not isinstance(payload, dict):
            return JSONResponse({"detail": "body must be a JSON object"}, 422)
        return payload

    async def _store(self, request: Request, name: str) -> Response | None:
        """Store the uploaded sources; an answer only when they are refused."""
        payload = await self._object(request)
        if isinstance(payload, Response):
            return payload
        sources = payload.get("sources")
        if not isinstance(sources, dict) or not all(_text(v) for v in sources.values()):
            return JSONResponse(
                {"detail": 'body must be {"sources": {lang: text}}, text in UTF-8'}, 422
            )
        try:
            self.library.store(name, sources)
        except IssueFormatError as err:
            return JSONResponse({"problems": [str(p) for p in err.problems]}, 422)
        return None

    async def _send_request(self, request: Request) -> dict[str, Any] | Response:
        payload = await self._object(request)
        if isinstance(payload, Response):
            return payload
        if not _segments_shape(payload.get("segments")) or not _fallbacks_shape(
            payload.get("fallbacks")
        ):
            return JSONResponse(
                {
                    "detail": 'segments must be a list of languages (or "en,be"), '
                    "fallbacks an object {segment: language}"
                },
                422,
            )
        return payload

    async def api_list(self, request: Request) -> Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        return JSONResponse({"issues": self.library.names()})

    async def api_issue(self, request: Request) -> Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        name = request.path_params["name"]
        if request.method == "PUT" and (refused := await self._store(request, name)):
            return refused
        folder = self.library.folder(name)
        if folder is None:
            return JSONResponse({"detail": "no such issue"}, 404)
        try:
            segments = parse_segments(request.query_params.get("segments"))
            fallbacks = parse_fallbacks(request.query_params.getlist("fallback"))
        except RendererError as err:
            return JSONResponse({"detail": str(err)}, 422)
        # The verdict ``issue check`` prints and ``issue send`` refuses on.
        found = verdict(folder.sources, segments=segments, fallbacks=fallbacks)
        status = 200 if found.matrix is not None else 422
        return JSONResponse({"name": name, **found.as_dict()}, status)

    async def api_send(self, request: Request) -> Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        payload = await self._send_request(request)
        if isinstance(payload, Response):
            return payload
        try:
            return await self._send(request.path_params["name"], payload)
        except SendRefused as err:
            return _refused(err)
        except IssueFormatError as err:
            return JSONResponse({"problems": [str(p) for p in err.problems]}, 422)
        except (RendererError, ValueError, TypeError) as err:
            body: dict[str, object] = {"detail": str(err)}
            if isinstance(err, IssueNotReady):  # the verdict's errors, as ``GET`` lists them
                body["problems"] = [str(p) for p in err.problems]
            return JSONResponse(body, 422)

    async def _send(self, name: str, payload: dict[str, object]) -> Response:
        test_to = payload.get("test_to")
        confirm_issue = payload.get("confirm_issue")
        if confirm_issue is not None and not isinstance(confirm_issue, int):
            raise ValueError("confirm_issue must be the issue number")
        if test_to is not None and not isinstance(test_to, str):
            raise ValueError("test_to must be an address")
        raw_segments = payload.get("segments")
        if raw_segments is not None and not isinstance(raw_segments, str | list):
            raise ValueError("segments must be a list of languages")
        fallbacks = payload.get("fallbacks") or {}
        if not isinstance(fallbacks, dict):
            raise ValueError("fallbacks must map a segment to a language")
        prepared = await self._prepare(
            name,
            segments=parse_segments(raw_segments),
            fallbacks=parse_fallbacks([f"{k}={v}" for k, v in fallbacks.items()]),
            test_to=test_to,
            surface=Surface.API,
            intent=_intent(payload.get("intent", "first")),
            confirm_number=confirm_issue,
            schedule=_schedule(payload),
        )
        rows, total = await self._sizes(prepared)
        summary = [
            {k: r[k] for k in ("segment", "edition", "subscribers", "html_bytes")} for r in rows
        ]
        if test_to is None and payload.get("confirm") is not True:
            return JSONResponse(
                {"confirm_required": True, "segments": summary, "total": total}, status_code=200
            )
        await self._start(prepared, surface=Surface.API, confirm_number=confirm_issue)
        return JSONResponse(
            {
                "send_id": prepared.command.send_id,
                "intent": str(prepared.intent),
                "schedule": (
                    prepared.command.schedule.model_dump(mode="json")
                    if prepared.command.schedule
                    else None
                ),
                "segments": summary,
                "total": total,
            },
            status_code=202,
        )


def _schedule(payload: dict[str, object]) -> SendSchedule | None:
    """``"at": "2026-12-07 09:00", "tz": "Europe/Minsk", "local_time": "09:00"`` (each optional)."""
    values = {k: payload.get(k) for k in ("at", "tz", "local_time")}
    if any(v is not None and not isinstance(v, str) for v in values.values()):
        raise ValueError("at, tz and local_time must be strings")
    return parse_schedule(
        at=values["at"],  # type: ignore[arg-type]
        tz=values["tz"],  # type: ignore[arg-type]
        local_time=values["local_time"],  # type: ignore[arg-type]
        clock=SYSTEM_CLOCK,
    )


def _intent(value: object) -> SendIntent:
    if value not in {"first", "only_new", "resend_all"}:
        raise ValueError('intent must be "first", "only_new" or "resend_all"')
    return SendIntent(str(value))


def _refused(err: SendRefused) -> Response:
    status = 409 if isinstance(err, IssueAlreadySent) else 422
    return JSONResponse(
        {
            "detail": str(err),
            "earlier_sends": [e.as_dict() for e in err.earlier],
            "choices": ["only_new", "resend_all"] if err.earlier else ["first"],
        },
        status_code=status,
    )


def _text(value: object) -> bool:
    """A string that can be stored as UTF-8 (JSON may carry lone surrogates: "\\ud800")."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _segments_shape(value: object) -> bool:
    return (
        value is None
        or _text(value)
        or (isinstance(value, list) and all(_text(item) for item in value))
    )


def _fallbacks_shape(value: object) -> bool:
    return value is None or (
        isinstance(value, dict) and all(_text(k) and _text(v) for k, v in value.items())
    )
