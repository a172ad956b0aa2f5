"""HTTP side of the receiver: provider webhooks plus ``/healthz``, ``/readyz``, ``/metrics``.

- ``POST /webhooks/ses``: an SNS HTTP(S) subscription; every message's signature is checked,
  a ``SubscriptionConfirmation`` is confirmed by fetching its ``SubscribeURL`` (same host
  rule as certificates), notifications carry SES bounce and complaint events;
- ``POST /webhooks/postmark`` and ``POST /webhooks/sendgrid``: JSON bodies, protected by
  ``?token=`` when ``NEWSLETTER_BOUNCES_WEBHOOK_TOKEN`` is set.

A body we cannot read is answered 400 (the provider stops retrying it); a broker outage 503
(the provider retries).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from services.bounces.errors import (
    IntakeUnavailable,
    SignatureInvalid,
    WebhookRejected,
)
from services.bounces.intake import BounceIntake, event_id, safe_address
from services.bounces.providers import (
    Notice,
    postmark_notices,
    sendgrid_notices,
    ses_notices,
)
from services.bounces.sns import SnsVerifier
from shared.messaging.schemas import UnsubscribeRequested
from shared.messaging.topology import UNSUBSCRIBE_REQUESTED

log = structlog.get_logger(__name__)

UrlOpener = Callable[[str], Awaitable[bytes]]

_MAX_BODY = 1024 * 1024


class WebhookHandlers:
    def __init__(
        self,
        *,
        intake: BounceIntake,
        verifier: SnsVerifier,
        secret_key: str,
        token: str = "",
        topic_arns: frozenset[str] = frozenset(),
        opener: UrlOpener | None = None,
    ) -> None:
        self._intake = intake
        self._verifier = verifier
        self._secret_key = secret_key
        self._token = token
        self._topics = topic_arns
        self._opener = opener

    async def _json(self, request: Request) -> Any:
        body = await request.body()
        if len(body) > _MAX_BODY:
            raise WebhookRejected("body too large")
        try:
            return json.loads(body)
        except ValueError as err:
            raise WebhookRejected("body is not JSON") from err

    def _check_token(self, request: Request) -> None:
        if self._token and not hmac.compare_digest(
            request.query_params.get("token", "").encode(), self._token.encode()
        ):
            raise PermissionError("bad webhook token")

    async def _publish(self, notices: list[Notice], *, source: str) -> int:
        count = 0
        for notice in notices:
            if notice.unsubscribe:
                recipient = safe_address(notice.finding.recipient)
                if recipient is None:
                    continue
                event = UnsubscribeRequested(
                    message_id=event_id(source, notice.evidence, recipient),
                    recipient=recipient,
                    method=source,
                    delivery_id=notice.finding.delivery_id,
                )
                await self._intake.publish_event(event, routing_key=UNSUBSCRIBE_REQUESTED)
                count += 1
                continue
            count += len(
                await self._intake.publish_findings(
                    [notice.finding], source=source, evidence=notice.evidence
                )
            )
        return count

    async def ses(self, request: Request) -> Response:
        envelope = await self._json(request)
        if not isinstance(envelope, dict):
            raise WebhookRejected("SNS body is not an object")
        await self._verifier.verify(envelope)
        if self._topics and envelope.get("TopicArn") not in self._topics:
            raise WebhookRejected("topic not allowed")
        kind = envelope.get("Type")
        if kind == "SubscriptionConfirmation":
            url = str(envelope.get("SubscribeURL", ""))
            self._verifier.check_host(url)
            if self._opener is not None:
                await self._opener(url)
            log.info("sns_subscription_confirmed", topic=envelope.get("TopicArn"))
            return JSONResponse({"confirmed": True})
        if kind != "Notification":
            return JSONResponse({"ignored": kind})
        try:
            notification = json.loads(str(envelope.get("Message", "")))
        except ValueError as err:
            raise WebhookRejected("SNS Message is not JSON") from err
        notices = ses_notices(notification, secret_key=self._secret_key)
        return JSONResponse({"events": await self._publish(notices, source="ses")})

    async def postmark(self, request: Request) -> Response:
        self._check_token(request)
        body = await self._json(request)
        if not isinstance(body, dict):
            raise WebhookRejected("Postmark body is not an object")
        notices = postmark_notices(body)
        return JSONResponse({"events": await self._publish(notices, source="postmark")})

    async def sendgrid(self, request: Request) -> Response:
        self._check_token(request)
        body = await self._json(request)
        if not isinstance(body, list) or not all(isinstance(e, Mapping) for e in body):
            raise WebhookRejected("SendGrid body is not a list of events")
        notices = sendgrid_notices(body)
        return JSONResponse({"events": await self._publish(notices, source="sendgrid")})


def _guarded(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except PermissionError:
            return JSONResponse({"error": "bad token"}, status_code=401)
        except SignatureInvalid as err:
            log.warning("webhook_signature_invalid", error=str(err))
            return JSONResponse({"error": "signature invalid"}, status_code=403)
        except WebhookRejected as err:
            log.warning("webhook_rejected", error=str(err))
            return JSONResponse({"error": str(err)}, status_code=400)
        except IntakeUnavailable:
            return JSONResponse({"error": "try again later"}, status_code=503)

    return endpoint


def webhook_app(handlers: WebhookHandlers, probes: Starlette) -> Starlette:
    """The receiver's HTTP app: webhooks, and the probe routes mounted at the root."""
    return Starlette(
        routes=[
            Route("/webhooks/ses", _guarded(handlers.ses), methods=["POST"]),
            Route("/webhooks/postmark", _guarded(handlers.postmark), methods=["POST"]),
            Route("/webhooks/sendgrid", _guarded(handlers.sendgrid), methods=["POST"]),
            Mount("/", app=probes),
        ]
    )
