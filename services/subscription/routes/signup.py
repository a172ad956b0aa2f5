"""The signup form: ``GET /`` shows it, ``POST /subscribe`` answers the same for every address.

Order of the checks on a post: per-IP limit (429), CSRF (403), bots (honeypot or time trap:
the normal answer, nothing stored), a stale form (400, shown again), the address and the
editions (422, shown again), then the signup itself, held to the response floor.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import FormData, UploadFile

from services.subscription import page_texts as texts
from services.subscription import reader_consent
from services.subscription.address_rules import MAX_LENGTH, NormalizedAddress, normalize_address
from services.subscription.dependencies import ComponentsDep, MailDep, SessionDep
from services.subscription.errors import InvalidAddress, MailQueueUnavailable
from services.subscription.form_guard import (
    CSRF_COOKIE,
    CSRF_FIELD,
    HONEYPOT_FIELD,
    STAMP_FIELD,
)
from services.subscription.group_commit import SignupWriter
from services.subscription.languages import clean_languages
from services.subscription.reading_times import OFFERED_ZONES, TIME_ZONE_SCRIPT, clean_time_zone
from services.subscription.signup import SignupOutcome, SignupRequest
from shared.db.tables import Subscriber
from shared.db.tables.timestamps import utcnow

router = APIRouter(tags=["pages"])
log = structlog.get_logger(__name__)


_URLENCODED = "application/x-www-form-urlencoded"
_MAX_FIELDS = 1000  # Starlette's limit for request.form()


async def _posted_form(request: Request) -> FormData:
    """The posted fields. The signup form posts urlencoded (the body is at most 64 KB,
    ``body_limit.py``): ``parse_qsl`` reads it in one pass, decoding as Starlette does (Latin-1
    bytes, then percent-escapes as UTF-8), where python-multipart's streaming parser made
    callbacks per field and byte range (6 % of a signup's CPU, now 2 %). Anything else goes
    to ``request.form()``.
    """
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != _URLENCODED:
        return await request.form()
    body = await request.body()
    try:
        fields: list[tuple[str, str | UploadFile]] = parse_qsl(  # type: ignore[assignment]
            body.decode("latin-1"), keep_blank_values=True, max_num_fields=_MAX_FIELDS
        )
    except ValueError as err:  # more fields than the limit
        raise HTTPException(status_code=400, detail="too many form fields") from err
    return FormData(fields)


def _field(form: FormData, name: str, limit: int = 4096) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def _form_page(
    request: Request,
    components: ComponentsDep,
    *,
    lang: str,
    status_code: int = 200,
    error: str | None = None,
    email: str = "",
    chosen: list[str] | None = None,
    reader_analytics: bool = False,
) -> HTMLResponse:
    return components.pages.render(
        request,
        "signup.html",
        lang=lang,
        status_code=status_code,
        error=components.pages.text(lang, error) if error else None,
        email=email[:MAX_LENGTH],
        chosen=chosen if chosen is not None else [lang],
        form_stamp=components.time_trap.stamp(),
        consent_text=components.pages.naming_text(
            lang, texts.CONSENT_TEXT, texts.NAMED[texts.CONSENT_TEXT]
        ),
        time_zones=OFFERED_ZONES,
        time_zone_script=TIME_ZONE_SCRIPT,
        reader_analytics_text=(
            components.pages.text(lang, texts.READER_ANALYTICS_CONSENT)
            if components.reader_analytics
            else None
        ),
        reader_analytics_checked=reader_analytics,
    )


@router.get("/", response_class=HTMLResponse, summary="The signup form")
async def signup_form(request: Request, components: ComponentsDep) -> HTMLResponse:
    return _form_page(request, components, lang=components.pages.language(request))


@router.post("/subscribe", response_class=HTMLResponse, summary="Sign up (double opt-in)")
async def subscribe(
    request: Request, components: ComponentsDep, mail: MailDep, session: SessionDep
) -> HTMLResponse:
    started = components.floor.start()
    pages = components.pages
    form = await _posted_form(request)
    lang = pages.language(request, _field(form, "lang", 8))
    refusal = _refusal(request, components, form=form, lang=lang)
    if refusal is not None:
        return refusal
    raw_email = _field(form, "email", 20_000)
    chosen = clean_languages([v for v in form.getlist("languages") if isinstance(v, str)])
    opted_in = components.reader_analytics and _field(form, reader_consent.FIELD, 8) == "yes"
    policy = components.policy
    age = components.time_trap.age_s(
        _field(form, STAMP_FIELD, 256), max_age_s=policy.signup_form_max_age_s
    )
    if _field(form, HONEYPOT_FIELD) or age is None or age < policy.signup_min_seconds:
        reason = "honeypot" if _field(form, HONEYPOT_FIELD) else "time_trap"
        log.info("signup_trapped", reason=reason)
        await components.floor.hold(started)
        return _done_page(request, components, lang)
    if age == float("inf"):
        return _form_page(
            request,
            components,
            lang=lang,
            status_code=400,
            error=texts.FORM_EXPIRED,
            email=raw_email,
            chosen=chosen,
            reader_analytics=opted_in,
        )
    address, problem = _checked_address(raw_email, chosen)
    if address is None or problem is not None:
        return _form_page(
            request,
            components,
            lang=lang,
            status_code=422,
            error=problem,
            email=address.email if address else raw_email,
            chosen=chosen,
            reader_analytics=opted_in,
        )
    shown_at = datetime.now(UTC) - timedelta(seconds=age)
    try:
        signups: SignupWriter = request.app.state.signups
        result = await signups.sign_up(
            mail=mail,
            request=SignupRequest(
                address=address,
                languages=chosen,
                locale=lang,
                consent_text_version=policy.consent_text_version,
                form="signup",
                source="signup form",
                client_ip_hash=components.ip_hash(request),
                shown_at=shown_at,
                time_zone=clean_time_zone(_field(form, "time_zone", 64)),
            ),
        )
    except MailQueueUnavailable:
        return pages.message(
            request,
            lang=lang,
            heading=texts.UNAVAILABLE_HEADING,
            paragraphs=[texts.UNAVAILABLE_TEXT],
            status_code=503,
            headers={"Retry-After": "60"},
        )
    if components.reader_analytics and result.subscriber_id is not None:
        await _record_reader_analytics(
            session,
            subscriber_id=result.subscriber_id,
            opted_in=opted_in,
            lang=lang,
            ip_hash=components.ip_hash(request),
        )
    if result.outcome in {SignupOutcome.CREATED, SignupOutcome.RESUBSCRIBED}:
        components.metrics.signups.labels(language=lang).inc()
    await components.floor.hold(started)
    return _done_page(request, components, lang)


async def _record_reader_analytics(
    session: SessionDep, *, subscriber_id: int, opted_in: bool, lang: str, ip_hash: str
) -> None:
    """The per-reader analytics box of a stored signup, in the ledger: a grant that the double
    opt-in confirms, or (unticked) the withdrawal of a grant still waiting for it. An active
    reader's signup stores nothing (no subscriber id here): only their preference page, reached
    through their own signed link, changes a consent they confirmed."""
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return
    now = utcnow()
    if opted_in:
        await reader_consent.grant(
            session,
            subscriber=subscriber,
            now=now,
            language=lang,
            source="signup form",
            confirmed=False,
            client_ip_hash=ip_hash,
        )
    else:
        await reader_consent.withdraw(
            session,
            subscriber_id=subscriber_id,
            now=now,
            method="signup form",
            unconfirmed_only=True,
        )
    await session.commit()


def _checked_address(
    raw_email: str, chosen: list[str]
) -> tuple[NormalizedAddress | None, str | None]:
    """The normalized address and the page text of the first problem with the post, if any."""
    try:
        address = normalize_address(raw_email)
    except InvalidAddress as err:
        log.info("signup_invalid_address", reason=err.reason)
        if err.reason == "non_ascii_local_part":
            return None, texts.NON_ASCII_LOCAL
        return None, texts.INVALID_ADDRESS
    return address, (None if chosen else texts.NO_LANGUAGE)


def _refusal(
    request: Request, components: ComponentsDep, *, form: FormData, lang: str
) -> HTMLResponse | None:
    """The answer to a post refused before reading it: over the IP limit, or no CSRF pair."""
    pages = components.pages
    ip = components.limit_key(request)
    if not components.ip_limiter.allow(ip):
        log.info("signup_rate_limited")
        return pages.message(
            request,
            lang=lang,
            heading=texts.TOO_MANY_HEADING,
            paragraphs=[texts.TOO_MANY_TEXT],
            status_code=429,
            headers={"Retry-After": str(components.ip_limiter.retry_after_s(ip))},
        )
    if not components.csrf.check(
        cookie=request.cookies.get(CSRF_COOKIE), field=_field(form, CSRF_FIELD, 256)
    ):
        log.info("signup_csrf_refused")
        return pages.message(
            request,
            lang=lang,
            heading=texts.SESSION_EXPIRED_HEADING,
            paragraphs=[texts.SESSION_EXPIRED_TEXT],
            status_code=403,
            link=(f"/?lang={lang}", texts.BACK_TO_FORM),
        )
    return None


def _done_page(request: Request, components: ComponentsDep, lang: str) -> HTMLResponse:
    return components.pages.posted_message(
        request,
        lang=lang,
        heading=texts.SIGNUP_DONE_HEADING,
        paragraphs=[texts.SIGNUP_DONE_TEXT],
    )
