"""Pure rendering: an issue edition or a transactional mail to subject, preheader, HTML and text.

Jinja2 renders the layout (interface strings from the gettext catalogs), premailer inlines the
CSS, and :func:`services.renderer.lines.wrap_html` keeps every line short enough for SMTP. Issue
editions keep the per-recipient markers of :mod:`shared.messaging.placeholders` (filled at send
time, see :mod:`services.renderer.fill`); the view-online URL is filled here, since it is the
same for every recipient of an edition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from babel import Locale
from babel.numbers import format_decimal
from markdown_it.renderer import RendererHTML
from markupsafe import Markup

from services.renderer.catalogs import N_, Templates
from services.renderer.dates import format_date_range
from services.renderer.errors import RenderFailed
from services.renderer.inline import inline_css
from services.renderer.issue import IssueEdition, markdown
from services.renderer.lines import wrap_html
from services.renderer.plaintext import Footnotes, blocks_text, inline_text, wrap
from shared.messaging import placeholders

IMAGE_WIDTH = 552  # the 600 px container less its padding

# Each subject in the seed's wording (naming the seed publication) and for any other name.
SUBJECTS: dict[str, tuple[str, str]] = {
    "confirmation": (
        N_("Confirm your subscription to the Weekly Digest"),
        N_("Confirm your subscription to %(name)s"),
    ),
    "welcome": (N_("Welcome to the Weekly Digest"), N_("Welcome to %(name)s")),
    "goodbye": (
        N_("You have unsubscribed from the Weekly Digest"),
        N_("You have unsubscribed from %(name)s"),
    ),
}
PREHEADERS: dict[str, str] = {
    "confirmation": N_("One click and the first issue is on its way."),
    "welcome": N_("Your subscription is confirmed."),
    "goodbye": N_("We will not write to you again."),
}
FALLBACK_NOTE = N_(
    "This issue has not been translated into your language yet. Below is the version in "
    "another language (%(language)s)."
)
IMAGE_LABEL = N_("Image")


@dataclass(frozen=True)
class RenderedMail:
    """A mail before MIME: ``language`` is its audience, ``content_language`` its text's."""

    language: str
    content_language: str
    subject: str
    preheader: str
    html: str
    text: str


def _trusted(html: str) -> Markup:
    """markdown-it's output: it escapes text and attributes, and raw HTML is off in issues."""
    return Markup(html)  # noqa: S704 - see the docstring


def finish_html(html: str) -> str:
    """premailer, then short lines."""
    return wrap_html(inline_css(html))


def render_transactional(
    templates: Templates, *, kind: str, language: str, links: Mapping[str, str]
) -> RenderedMail:
    """A confirmation, welcome or goodbye mail in ``language`` with these absolute links."""
    if kind not in SUBJECTS:
        raise RenderFailed(f"unknown transactional kind {kind!r}")
    subject = templates.named(language, *SUBJECTS[kind])
    preheader = templates.gettext(language, PREHEADERS[kind])
    context = {
        "lang": language,
        "subject": subject,
        "preheader": preheader,
        "links": _Links(links),
    }
    html, text = _render_pair(templates, language, kind, context)
    return RenderedMail(language, language, subject, preheader, finish_html(html), text)


class _Links(dict[str, str]):
    """Links of a transactional mail; a missing one is simply not shown (``links.x`` is '')."""

    def __getattr__(self, name: str) -> str:
        return self.get(name, "")


@dataclass(frozen=True)
class EditionContext:
    """The per-send values of an edition (same for every recipient)."""

    segment: str
    view_url: str = ""
    archive_url: str = ""
    open_pixel_url: str = ""  # empty: no open pixel (NEWSLETTER_OPEN_TRACKING off, the default)


def edition_context(
    templates: Templates, edition: IssueEdition, *, context: EditionContext
) -> dict[str, Any]:
    """The template variables of one edition, with per-recipient markers in place."""
    language = edition.language
    md = markdown()
    html_renderer = md.renderer
    assert isinstance(html_renderer, RendererHTML)
    notes = Footnotes()
    image_label = templates.gettext(language, IMAGE_LABEL)
    sections = []
    for section in edition.sections:
        articles = []
        for article in section.articles:
            for token in article.body:
                for child in token.children or []:
                    if child.type == "image":
                        child.attrSet("width", str(IMAGE_WIDTH))
            lead_children = article.lead.children if article.lead else []
            articles.append(
                {
                    "key": article.key,
                    "title": article.title,
                    "lead_html": _trusted(
                        html_renderer.renderInline(lead_children or [], md.options, {})
                    ),
                    "body_html": _trusted(md.renderer.render(article.body, md.options, {})),
                    "lead_text": wrap(inline_text(article.lead, notes, image_label=image_label)),
                    "body_text": blocks_text(article.body, notes, image_label=image_label),
                }
            )
        sections.append({"title": section.title, "articles": articles})
    fallback_note = ""
    if context.segment != language:
        name = Locale.parse(context.segment).languages.get(language, language)
        fallback_note = templates.gettext(context.segment, FALLBACK_NOTE, language=name)
    subject = edition.subject
    return {
        "lang": language,
        "segment": context.segment,
        "subject": subject,
        "preheader": edition.preheader,
        "number": format_decimal(edition.number, locale=language),
        "date_range": format_date_range(edition.date_from, edition.date_to, language=language),
        "sections": sections,
        "footnotes": notes.lines(),
        "fallback_note": fallback_note,
        "view_url": context.view_url,
        "archive_url": context.archive_url,
        "open_pixel_url": context.open_pixel_url,
        "unsubscribe_url": placeholders.UNSUBSCRIBE_URL,
        "preferences_url": placeholders.PREFERENCES_URL,
        "recipient": placeholders.RECIPIENT,
    }


def render_edition_templates(
    templates: Templates, edition: IssueEdition, *, context: EditionContext
) -> tuple[dict[str, Any], str, str]:
    """Jinja2 only (no premailer): the context, raw HTML and text."""
    values = edition_context(templates, edition, context=context)
    html, text = _render_pair(templates, edition.language, "issue", values)
    return values, html, text


def render_edition(
    templates: Templates, edition: IssueEdition, *, context: EditionContext
) -> RenderedMail:
    """One language edition, rendered once for every recipient of its segment."""
    values, html, text = render_edition_templates(templates, edition, context=context)
    return RenderedMail(
        language=context.segment,
        content_language=edition.language,
        subject=values["subject"],
        preheader=edition.preheader,
        html=finish_html(html),
        text=text,
    )


def _render_pair(
    templates: Templates, language: str, name: str, context: Mapping[str, Any]
) -> tuple[str, str]:
    env = templates.env(language)
    try:
        html = env.get_template(f"{name}.html").render(context)
        text = env.get_template(f"{name}.txt").render(context)
    except jinja2.TemplateError as err:
        raise RenderFailed(f"template {name} ({language}): {err}") from err
    return html, _tidy_text(text)


def _tidy_text(text: str) -> str:
    """At most one blank line in a row, no trailing spaces, one final newline."""
    lines = [line.rstrip() for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    return "\n".join(out).strip("\n") + "\n"
