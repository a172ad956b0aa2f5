"""HTTP side of the receiver: provider webhooks plus ``/healthz``, ``/readyz``, ``/metrics``.

- ``POST /webhooks/ses``: an SNS HTTP(S) subscription; every message's signature is checked and
  its topic must be allowed, a ``SubscriptionConfirmation`` is confirmed by fetching its
  ``SubscribeURL`` (same host rule as certificates), notifications carry SES events;
- ``POST /webhooks/postmark``: basic auth or a token (``auth.PostmarkAuth``);
- ``POST /webhooks/sendgrid``: SendGrid's Signed Event Webhook (``auth.SendGridVerifier``).

A provider left out of ``NEWSLETTER_BOUNCES_WEBHOOKS`` answers 404. Answers: 401 without valid
credentials (403 for a bad SNS signature), 413 for a body over the limit, 400 for a body we
cannot read (too deep, not JSON, an id out of range: the provider stops retrying it), 429 when
the client IP or the provider is over its reports per minute, 503 for a broker or database
outage (the provider retries). Nothing is published before a request passes all checks.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from services.bounces.auth import PostmarkAuth, SendGridVerifier
from services.bounces.errors import (
    BodyTooLarge,
    IntakeUnavailable,
    RateLimited,
    SignatureInvalid,
    Unauthenticated,
    WebhookRejected,
)
from services.bounces.intake import BounceIntake
from services.bounces.limits import check_depth, load_json
from services.bounces.metrics import BounceMetrics
from services.bounces.providers import (
    Notice,
    postmark_notices,
    sendgrid_notices,
    ses_notices,
)
from services.bounces.sns import SnsVerifier
from shared.rate_limit import SlidingWindowLimiter

log = structlog.get_logger(__name__)

UrlOpener = Callable[[str], Awaitable[bytes]]
Handler = Callable[[Request], Awaitable[Response]]


class WebhookHandlers:
    def __init__(
        self,
        *,
        intake: BounceIntake,
        verifier: SnsVerifier,
        postmark: PostmarkAuth,
        sendgrid: SendGridVerifier,
        topic_arns: frozenset[str],
        per_ip: SlidingWindowLimiter,
        per_provider: SlidingWindowLimiter,
        max_bytes: int = 1024 * 1024,
        opener: UrlOpener | None = None,
    ) -> None:
        self._intake = intake
        self._verifier = verifier
        self._postmark = postmark
        self._sendgrid = sendgrid
        self._topics = topic_arns
        self._per_ip = per_ip
        self._per_provider = per_provider
        self._max_bytes = max_bytes
        self._opener = opener

    async def _body(self, request: Request) -> bytes:
        """The raw body, read no further than the limit."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise BodyTooLarge(f"body over {self._max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self._max_bytes:
                    raise BodyTooLarge(f"body over {self._max_bytes} bytes")
                chunks.append(chunk)
        except ClientDisconnect as err:
            raise WebhookRejected("client went away") from err
        return b"".join(chunks)

    async def _publish(self, request: Request, notices: list[Notice], *, source: str) -> Response:
        """Charge the source's budgets, then publish (all or nothing as far as limits go)."""
        cost = max(len(notices), 1)
        # Per sending host, not per /64: a provider's webhook senders share its networks.
        client = request.client.host if request.client else "unknown"
        if not self._per_ip.would_allow(f"ip:{client}", cost) or not self._per_provider.would_allow(
            source, cost
        ):
            raise RateLimited(f"{source} over its reports per minute")
        self._per_ip.record(f"ip:{client}", cost)
        self._per_provider.record(source, cost)
        return JSONResponse({"events": await self._intake.publish_notices(notices, source=source)})

    async def ses(self, request: Request) -> Response:
        envelope = load_json(await self._body(request), max_bytes=self._max_bytes)
        if not isinstance(envelope, dict):
            raise WebhookRejected("SNS body is not an object")
        await self._verifier.verify(envelope)
        # Any AWS account can get SNS to sign: the topic is the credential (required in
        # production by the settings; an empty list accepts any topic in demo and tests).
        if self._topics and envelope.get("TopicArn") not in self._topics:
            raise SignatureInvalid("topic not allowed")
        kind = envelope.get("Type")
        if kind == "SubscriptionConfirmation":
            url = str(envelope.get("SubscribeURL", ""))
            self._verifier.check_host(url)
            if self._opener is not None:
                await self._opener(url)
            log.info("sns_subscription_confirmed", topic=envelope.get("TopicArn"))
            return JSONResponse({"confirmed": True})
        if kind != "Notification":
            return JSONResponse({"ignored": str(kind)[:64]})
        try:
            notification = json.loads(str(envelope.get("Message", "")))
        except (ValueError, RecursionError) as err:
            raise WebhookRejected("SNS Message is not JSON") from err
        check_depth(notification)
        if not isinstance(notification, dict):
            raise WebhookRejected("SNS Message is not an object")
        return await self._publish(request, ses_notices(notification), source="ses")

    async def postmark(self, request: Request) -> Response:
        self._postmark.check(headers=request.headers, query=request.query_params)
        body = load_json(await self._body(request), max_bytes=self._max_bytes)
        if not isinstance(body, dict):
            raise WebhookRejected("Postmark body is not an object")
        return await self._publish(request, postmark_notices(body), source="postmark")

    async def sendgrid(self, request: Request) -> Response:
        raw = await self._body(request)
        self._sendgrid.verify(headers=request.headers, body=raw)
        body = load_json(raw, max_bytes=self._max_bytes)
        if not isinstance(body, list) or not all(isinstance(e, Mapping) for e in body):
            raise WebhookRejected("SendGrid body is not a list of events")
        return await self._publish(request, sendgrid_notices(body), source="sendgrid")


def _guarded(handler: Handler, *, provider: str, metrics: BounceMetrics | None) -> Handler:
    def refused(reason: str, status: int, body: dict[str, Any]) -> Response:
        if metrics is not None:
            metrics.refused.labels(provider=provider, reason=reason).inc()
        return JSONResponse(body, status_code=status)

    async def endpoint(request: Request) -> Response:  # noqa: PLR0911 - one answer per error
        try:
            return await handler(request)
        except SignatureInvalid as err:
            log.warning("webhook_signature_invalid", provider=provider, error=str(err)[:200])
            return refused("unauthenticated", 403, {"error": "signature invalid"})
        except Unauthenticated as err:
            log.warning("webhook_unauthenticated", provider=provider, error=str(err)[:200])
            return refused("unauthenticated", 401, {"error": "authentication required"})
        except RateLimited:
            log.warning("webhook_rate_limited", provider=provider)
            return refused("rate_limited", 429, {"error": "too many reports, slow down"})
        except BodyTooLarge as err:
            return refused("bad_request", 413, {"error": str(err)})
        except WebhookRejected as err:
            log.warning("webhook_rejected", provider=provider, error=str(err)[:200])
            return refused("bad_request", 400, {"error": str(err)[:200]})
        except IntakeUnavailable:
            return JSONResponse({"error": "try again later"}, status_code=503)

    return endpoint


def webhook_app(
    handlers: WebhookHandlers,
    probes: Starlette,
    *,
    enabled: frozenset[str],
    metrics: BounceMetrics | None = None,
) -> Starlette:
    """The receiver's HTTP app: the enabled webhooks, and the probe routes at the root."""
    endpoints = {"ses": handlers.ses, "postmark": handlers.postmark, "sendgrid": handlers.sendgrid}
    routes: list[Route | Mount] = [
        Route(
            f"/webhooks/{name}",
            _guarded(handler, provider=name, metrics=metrics),
            methods=["POST"],
        )
        for name, handler in endpoints.items()
        if name in enabled
    ]
    return Starlette(routes=[*routes, Mount("/", app=probes)])
