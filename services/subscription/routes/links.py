"""Pages behind the links in our mails: confirm, unsubscribe (with RFC 8058 one-click) and
preferences.

A GET never changes anything (mail scanners follow links): it shows a page whose POST form,
protected by CSRF, does the change. The one-click POST is the exception by design: mail clients
send it with no cookie, and it needs only the signed token and the RFC 8058 body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from starlette.datastructures import FormData

from services.subscription import page_texts as texts
from services.subscription import reader_consent
from services.subscription.components import Components
from services.subscription.dependencies import ComponentsDep, MailDep, SessionDep
from services.subscription.errors import ExpiredLinkToken, InvalidLinkToken, MailQueueUnavailable
from services.subscription.form_guard import CSRF_COOKIE, CSRF_FIELD
from services.subscription.languages import clean_languages
from services.subscription.lifecycle import (
    change_languages,
    confirm,
    resend_confirmation,
    subscriber_for,
    unsubscribe,
    unsubscribe_subscriber,
)
from services.subscription.link_tokens import VerifiedLink
from services.subscription.reading_times import (
    change_reading_times,
    clean_cadence,
    clean_time_zone,
    current_cadence,
    zone_choices,
)
from services.subscription.records import languages_of
from shared.db.tables import Cadence, Subscriber, SubscriberStatus
from shared.db.tables.timestamps import utcnow
from shared.links import CONFIRM_MAX_AGE_S, CONFIRM_PATH, ONE_CLICK_PATH, PREFERENCES_PATH
from shared.links import UNSUBSCRIBE_PATH as UNSUBSCRIBE
from shared.settings import LANGUAGES
from shared.tokens import Purpose

router = APIRouter(tags=["pages"])
log = structlog.get_logger(__name__)
ONE_CLICK_FIELD = ("List-Unsubscribe", "One-Click")
_MAX_FIELDS = 1000  # Starlette's limit for request.form()


def _field(form: FormData, name: str, limit: int = 1024) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def _invalid(request: Request, components: Components, lang: str) -> HTMLResponse:
    return components.pages.message(
        request,
        lang=lang,
        heading=texts.INVALID_LINK_HEADING,
        paragraphs=[texts.INVALID_LINK_TEXT],
        status_code=400,
        link=(f"/?lang={lang}", texts.SIGN_UP_AGAIN),
    )


def _csrf_refused(request: Request, components: Components, lang: str) -> HTMLResponse:
    return components.pages.message(
        request,
        lang=lang,
        heading=texts.SESSION_EXPIRED_HEADING,
        paragraphs=[texts.SESSION_EXPIRED_TEXT],
        status_code=403,
    )


def _unavailable(request: Request, components: Components, lang: str) -> HTMLResponse:
    return components.pages.message(
        request,
        lang=lang,
        heading=texts.UNAVAILABLE_HEADING,
        paragraphs=[texts.UNAVAILABLE_TEXT],
        status_code=503,
        headers={"Retry-After": "60"},
    )


@dataclass(frozen=True, slots=True)
class ReaderBox:
    """The per-reader analytics box on the confirmation page, always unticked; ``waiting``: a
    grant ticked on the signup form waits for it (the page says that only this tick counts)."""

    waiting: bool


def _action_page(
    request: Request,
    components: Components,
    *,
    lang: str,
    heading: str,
    explanation: str,
    action: str,
    button: str,
    token: str,
    link: tuple[str, str] | None = None,
    reader_box: ReaderBox | None = None,
) -> HTMLResponse:
    pages = components.pages
    return pages.render(
        request,
        "action.html",
        reader_analytics_text=pages.text(lang, texts.READER_ANALYTICS_CONSENT)
        if reader_box
        else None,
        reader_analytics_note=pages.text(lang, texts.READER_ANALYTICS_WAITING)
        if reader_box and reader_box.waiting
        else None,
        lang=lang,
        heading=pages.text(lang, heading),
        explanation=pages.naming_text(lang, explanation, texts.NAMED[explanation])
        if explanation in texts.NAMED
        else pages.text(lang, explanation),
        action=action,
        button=pages.text(lang, button),
        token=token,
        link_href=link[0] if link else None,
        link_text=pages.text(lang, link[1]) if link else None,
    )


class LinkPost(NamedTuple):
    """A link page's POST with a good CSRF pair: the form, its page language, its token."""

    form: FormData
    lang: str
    token: str


async def _link_post(request: Request, components: Components) -> LinkPost | HTMLResponse:
    """The POST of a link page's form, or the 403 page if its CSRF pair is not good."""
    form = await request.form()
    lang = components.pages.language(request, _field(form, "lang", 8))
    if not components.csrf.check(
        cookie=request.cookies.get(CSRF_COOKIE), field=_field(form, CSRF_FIELD, 256)
    ):
        return _csrf_refused(request, components, lang)
    return LinkPost(form, lang, _field(form, "token"))


async def _page_language(
    request: Request, components: Components, session: SessionDep, subscriber_id: int | None
) -> str:
    """An explicit ``?lang=`` wins; else the language the subscriber signed up in (their mail
    was in it); else ``Accept-Language``."""
    explicit = request.query_params.get("lang", "")
    if explicit not in LANGUAGES and subscriber_id is not None:
        subscriber = await session.get(Subscriber, subscriber_id)
        if subscriber is not None and subscriber.locale in LANGUAGES:
            return subscriber.locale
    return components.pages.language(request)


# --- confirm -------------------------------------------------------------------------------


def _expired_page(request: Request, components: Components, lang: str, token: str) -> HTMLResponse:
    return _action_page(
        request,
        components,
        lang=lang,
        heading=texts.EXPIRED_HEADING,
        explanation=texts.EXPIRED_TEXT,
        action=f"{CONFIRM_PATH}/resend",
        button=texts.EXPIRED_BUTTON,
        token=token,
    )


@router.get(CONFIRM_PATH, response_class=HTMLResponse, summary="Confirmation page (no change)")
async def confirm_page(
    request: Request, components: ComponentsDep, session: SessionDep, token: str = ""
) -> HTMLResponse:
    try:
        link = components.reader.read(Purpose.CONFIRM, token, max_age_s=CONFIRM_MAX_AGE_S)
    except ExpiredLinkToken as expired:
        lang = await _page_language(request, components, session, expired.subscriber_id)
        return _expired_page(request, components, lang, token)
    except InvalidLinkToken:
        return _invalid(request, components, components.pages.language(request))
    lang = await _page_language(request, components, session, link.subscriber_id)
    return _action_page(
        request,
        components,
        lang=lang,
        heading=texts.CONFIRM_HEADING,
        explanation=texts.CONFIRM_TEXT,
        action=CONFIRM_PATH,
        button=texts.CONFIRM_BUTTON,
        token=token,
        reader_box=ReaderBox(
            waiting=await reader_consent.waiting(session, subscriber_id=link.subscriber_id)
        )
        if components.reader_analytics
        else None,
    )


@router.post(CONFIRM_PATH, response_class=HTMLResponse, summary="Confirm (idempotent)")
async def confirm_post(
    request: Request, components: ComponentsDep, session: SessionDep, mail: MailDep
) -> HTMLResponse:
    if isinstance(posted := await _link_post(request, components), HTMLResponse):
        return posted
    form, lang, token = posted
    try:
        link = components.reader.read(Purpose.CONFIRM, token, max_age_s=CONFIRM_MAX_AGE_S)
        ticked = components.reader_analytics and _field(form, reader_consent.FIELD, 8) == "yes"
        await confirm(
            session=session,
            mail=mail,
            metrics=components.metrics,
            link=link,
            welcome=components.policy.welcome_mail,
            reader_analytics=reader_consent.OptInTick(
                language=lang, client_ip_hash=components.ip_hash(request)
            )
            if ticked
            else None,
        )
    except ExpiredLinkToken:
        return _expired_page(request, components, lang, token)
    except InvalidLinkToken:
        log.info("confirm_refused")
        return _invalid(request, components, lang)
    return components.pages.message(
        request, lang=lang, heading=texts.CONFIRMED_HEADING, paragraphs=[texts.CONFIRMED_TEXT]
    )


@router.post(f"{CONFIRM_PATH}/resend", response_class=HTMLResponse, summary="New confirmation mail")
async def confirm_resend(
    request: Request, components: ComponentsDep, session: SessionDep, mail: MailDep
) -> HTMLResponse:
    if isinstance(posted := await _link_post(request, components), HTMLResponse):
        return posted
    _, lang, token = posted
    if not components.ip_limiter.allow(components.limit_key(request)):
        return components.pages.message(
            request,
            lang=lang,
            heading=texts.TOO_MANY_HEADING,
            paragraphs=[texts.TOO_MANY_TEXT],
            status_code=429,
        )
    started = components.floor.start()
    try:
        # The signature must be ours; its age does not matter here.
        link = components.reader.read(Purpose.CONFIRM, token, max_age_s=None)
        await resend_confirmation(
            session=session,
            mail=mail,
            subscriber_id=link.subscriber_id,
            email_hash_prefix=link.email_hash_prefix,
            interval_s=components.policy.confirmation_interval_s,
        )
    except InvalidLinkToken:
        return _invalid(request, components, lang)
    except MailQueueUnavailable:
        return _unavailable(request, components, lang)
    await components.floor.hold(started)
    return components.pages.message(
        request, lang=lang, heading=texts.SIGNUP_DONE_HEADING, paragraphs=[texts.RESENT_TEXT]
    )


# --- unsubscribe ---------------------------------------------------------------------------


def _unsubscribed_page(request: Request, components: Components, lang: str) -> HTMLResponse:
    return components.pages.message(
        request,
        lang=lang,
        heading=texts.UNSUBSCRIBED_HEADING,
        paragraphs=[texts.UNSUBSCRIBED_TEXT],
        link=(f"/?lang={lang}", texts.SIGN_UP_AGAIN),
    )


@router.get(UNSUBSCRIBE, response_class=HTMLResponse, summary="Unsubscribe page (no change)")
@router.get(ONE_CLICK_PATH, response_class=HTMLResponse, include_in_schema=False)
async def unsubscribe_page(
    request: Request, components: ComponentsDep, session: SessionDep, token: str = ""
) -> HTMLResponse:
    try:
        link = components.reader.read(Purpose.UNSUBSCRIBE, token, max_age_s=None)
    except InvalidLinkToken:
        return _invalid(request, components, components.pages.language(request))
    lang = await _page_language(request, components, session, link.subscriber_id)
    preferences = components.links.preferences(link.subscriber_id, link.email_hash_prefix)
    return _action_page(
        request,
        components,
        lang=lang,
        heading=texts.UNSUBSCRIBE_HEADING,
        explanation=texts.UNSUBSCRIBE_TEXT,
        action=UNSUBSCRIBE,
        button=texts.UNSUBSCRIBE_BUTTON,
        token=token,
        link=(preferences, texts.PREFERENCES_INSTEAD),
    )


@router.post(UNSUBSCRIBE, response_class=HTMLResponse, summary="Unsubscribe (idempotent)")
async def unsubscribe_post(
    request: Request, components: ComponentsDep, session: SessionDep, mail: MailDep
) -> HTMLResponse:
    if isinstance(posted := await _link_post(request, components), HTMLResponse):
        return posted
    _, lang, token = posted
    try:
        link = components.reader.read(Purpose.UNSUBSCRIBE, token, max_age_s=None)
        await unsubscribe(
            session=session,
            mail=mail,
            metrics=components.metrics,
            link=link,
            method="page",
            send_goodbye=True,
        )
    except InvalidLinkToken:
        return _invalid(request, components, lang)
    return _unsubscribed_page(request, components, lang)


@router.post(
    ONE_CLICK_PATH,
    summary="RFC 8058 one-click unsubscribe",
    description=(
        "The `List-Unsubscribe` URL of every mail. Mail clients POST the body "
        "`List-Unsubscribe=One-Click` with no cookie; the unsubscribe is committed before the "
        "answer, so a send planned afterwards skips the address. No goodbye mail is sent: "
        "the person acted from their mail client, and a mail in reply would be unwelcome."
    ),
    responses={400: {"description": "Bad token or not an RFC 8058 body"}},
)
async def one_click(
    request: Request, components: ComponentsDep, session: SessionDep, mail: MailDep, token: str = ""
) -> Response:
    if not await _is_one_click_post(request):
        return PlainTextResponse("expected the body List-Unsubscribe=One-Click\n", 400)
    try:
        link: VerifiedLink = components.reader.read(Purpose.UNSUBSCRIBE, token, max_age_s=None)
        await unsubscribe(
            session=session,
            mail=mail,
            metrics=components.metrics,
            link=link,
            method="one-click",
            send_goodbye=False,
        )
    except InvalidLinkToken:
        return PlainTextResponse("invalid unsubscribe link\n", 400)
    return PlainTextResponse("unsubscribed\n", 200)


async def _is_one_click_post(request: Request) -> bool:
    """Whether the body holds the field ``List-Unsubscribe=One-Click`` (RFC 8058 section 3.2:
    multipart/form-data SHOULD be used, urlencoded MAY). A body of another type is read as
    urlencoded: some mail clients send that one line with no content type."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form()
        return form.get(ONE_CLICK_FIELD[0]) == ONE_CLICK_FIELD[1]
    body = await request.body()
    try:
        fields = parse_qsl(
            body.decode("latin-1"), keep_blank_values=True, max_num_fields=_MAX_FIELDS
        )
    except ValueError:  # more fields than the limit
        return False
    return ONE_CLICK_FIELD in fields


# --- preferences ---------------------------------------------------------------------------


async def _preferences_page(
    request: Request,
    components: Components,
    session: SessionDep,
    *,
    lang: str,
    token: str,
    link: VerifiedLink,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    subscriber = await subscriber_for(
        session, subscriber_id=link.subscriber_id, email_hash_prefix=link.email_hash_prefix
    )
    if subscriber.status not in {SubscriberStatus.ACTIVE, SubscriberStatus.PENDING}:
        return components.pages.message(
            request,
            lang=lang,
            heading=texts.UNSUBSCRIBED_HEADING,
            paragraphs=[texts.NOT_SUBSCRIBED_TEXT],
            link=(f"/?lang={lang}", texts.SIGN_UP_AGAIN),
        )
    pages = components.pages
    return pages.render(
        request,
        "preferences.html",
        lang=lang,
        status_code=status_code,
        token=token,
        chosen=await languages_of(session, link.subscriber_id),
        cadence=current_cadence(subscriber, now=utcnow()),
        time_zone=subscriber.time_zone,
        time_zones=zone_choices(subscriber.time_zone),
        notice=pages.text(lang, notice) if notice else None,
        error=pages.text(lang, error) if error else None,
        reader_analytics_text=(
            pages.text(lang, texts.READER_ANALYTICS_CONSENT)
            if components.reader_analytics
            else None
        ),
        reader_analytics_checked=components.reader_analytics
        and await reader_consent.standing(session, subscriber_id=link.subscriber_id),
    )


async def _change_reader_analytics(
    session: SessionDep, *, subscriber: Subscriber, opted_in: bool, lang: str, ip_hash: str
) -> None:
    """The per-reader analytics box of the preference page, in the ledger (the caller commits):
    a grant, confirmed at once for an active reader (they came through their own signed link),
    or the withdrawal of every open grant. The renderer stops writing their clicks with the
    next flush, and deletes what it holds of them with its next sweep."""
    assert subscriber.id is not None
    now = utcnow()
    if opted_in:
        await reader_consent.grant(
            session,
            subscriber=subscriber,
            now=now,
            language=lang,
            source="preferences page",
            confirmed=subscriber.status == SubscriberStatus.ACTIVE,
            client_ip_hash=ip_hash,
        )
    else:
        await reader_consent.withdraw(
            session, subscriber_id=subscriber.id, now=now, method="preferences"
        )


@router.get(PREFERENCES_PATH, response_class=HTMLResponse, summary="Preferences page")
async def preferences_page(
    request: Request, components: ComponentsDep, session: SessionDep, token: str = ""
) -> HTMLResponse:
    try:
        link = components.reader.read(Purpose.PREFERENCES, token, max_age_s=None)
    except InvalidLinkToken:
        return _invalid(request, components, components.pages.language(request))
    lang = await _page_language(request, components, session, link.subscriber_id)
    try:
        return await _preferences_page(
            request, components, session, lang=lang, token=token, link=link
        )
    except InvalidLinkToken:
        return _invalid(request, components, lang)


@router.post(PREFERENCES_PATH, response_class=HTMLResponse, summary="Change editions")
async def preferences_post(
    request: Request, components: ComponentsDep, session: SessionDep, mail: MailDep
) -> HTMLResponse:
    if isinstance(posted := await _link_post(request, components), HTMLResponse):
        return posted
    form, lang, token = posted
    try:
        link = components.reader.read(Purpose.PREFERENCES, token, max_age_s=None)
        if _field(form, "action", 32) == "unsubscribe":
            subscriber = await subscriber_for(
                session, subscriber_id=link.subscriber_id, email_hash_prefix=link.email_hash_prefix
            )
            await unsubscribe_subscriber(
                session=session,
                mail=mail,
                metrics=components.metrics,
                subscriber=subscriber,
                method="preferences",
                send_goodbye=True,
            )
            return _unsubscribed_page(request, components, lang)
        chosen = clean_languages([v for v in form.getlist("languages") if isinstance(v, str)])
        if not chosen:
            return await _preferences_page(
                request,
                components,
                session,
                lang=lang,
                token=token,
                link=link,
                error=texts.NO_LANGUAGE,
                status_code=422,
            )
        subscriber = await change_languages(session=session, link=link, languages=chosen)
        await change_reading_times(
            session=session,
            subscriber=subscriber,
            time_zone=clean_time_zone(_field(form, "time_zone", 64)),
            cadence=clean_cadence(_field(form, "cadence", 16)) or Cadence.EVERY,
            now=utcnow(),
        )
        if components.reader_analytics:
            await _change_reader_analytics(
                session,
                subscriber=subscriber,
                opted_in=_field(form, reader_consent.FIELD, 8) == "yes",
                lang=lang,
                ip_hash=components.ip_hash(request),
            )
        await session.commit()
        return await _preferences_page(
            request,
            components,
            session,
            lang=lang,
            token=token,
            link=link,
            notice=texts.PREFERENCES_SAVED,
        )
    except InvalidLinkToken:
        return _invalid(request, components, lang)
