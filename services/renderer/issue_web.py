"""An issue as a web page: its sections and articles taken out of a rendered edition.

The ``edition`` row keeps the mail's HTML (CSS inlined by premailer, classes kept). The web page
takes only the content cells of it (``td.content``: section title, article titles, leads and
bodies), drops the inline mail styles so the page's own stylesheet applies, and leaves every
mail-only part behind: the "view in browser" line, the "you receive this mail because…" footer
and its unsubscribe and preferences links. The HTML was produced by our own renderer from
Markdown with raw HTML off, so what is taken out is trusted markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import html as lxml_html
from markupsafe import Markup


@dataclass(frozen=True)
class WebArticle:
    key: str
    title: str
    lead: Markup
    body: Markup


@dataclass(frozen=True)
class WebSection:
    title: str
    articles: list[WebArticle] = field(default_factory=list)


def _markup(element: lxml_html.HtmlElement | None, *, inner: bool) -> Markup:
    if element is None:
        return Markup("")
    for node in element.iter():
        node.attrib.pop("style", None)
        if node.tag == "img":
            node.attrib.pop("width", None)
            node.attrib.pop("height", None)
    if not inner:
        return Markup(lxml_html.tostring(element, encoding="unicode"))  # noqa: S704 - see docstring
    text = element.text or ""
    parts = [lxml_html.tostring(child, encoding="unicode") for child in element]
    return Markup(_escape_text(text) + "".join(parts))  # noqa: S704 - see docstring


def _text(element: lxml_html.HtmlElement) -> str:
    """The element's text with the mail's line wrapping undone."""
    return " ".join(element.text_content().split())


def _escape_text(text: str) -> str:
    return str(Markup.escape(text))


def sections_of(mail_html: str) -> list[WebSection]:
    """The sections and articles of a rendered issue edition, in their order."""
    document = lxml_html.document_fromstring(mail_html)
    sections: list[WebSection] = []
    for cell in document.find_class("content"):
        title = cell.find_class("section-title")
        if not title:
            continue
        section = WebSection(title=_text(title[0]))
        for heading in cell.find_class("article-title"):
            lead = heading.getnext()
            body = lead.getnext() if lead is not None else None
            if lead is not None and "lead" not in (lead.get("class") or "").split():
                body, lead = lead, None
            if body is not None and "article-body" not in (body.get("class") or "").split():
                body = None
            section.articles.append(
                WebArticle(
                    key=heading.get("id") or "",
                    title=_text(heading),
                    lead=_markup(lead, inner=True),
                    body=_markup(body, inner=True),
                )
            )
        sections.append(section)
    return sections
