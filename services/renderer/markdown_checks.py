"""Markdown that cannot go out broken: what markdown-it would leave as raw text, or render
in a way a reader cannot use, found in its token stream and located in the source.

markdown-it says *what* each piece of an issue is (a link, an image, text, raw HTML); the
source lines say *where* (``Token.map`` gives the lines of a block, soft breaks the line inside
it, and the column comes from finding the piece in that source line). A construct that did not
parse is left in a ``text`` token: an unclosed link ``[Министерство](https://…`` or a URL with a
space ``[x](https://a b)`` shows up there as ``](`` followed by its would-be URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from markdown_it import MarkdownIt
from markdown_it.token import Token

from services.renderer.errors import N_, Problem, Wording
from services.renderer.link_checks import link_wording

# ``](`` or ``] (`` left in text: link syntax that markdown-it did not accept.
_FAILED_LINK = re.compile(r"\](?P<gap>[ \t]*)\((?P<rest>[^)]*)(?P<close>\)?)")
# HTML elements an author may write by habit. A "tag" with another name (``a<b and x > y``) is
# CommonMark raw HTML too, but shown as text it reads as the author meant: not reported.
_HTML_ELEMENTS = frozenset(
    [
        "a",
        "abbr",
        "audio",
        "b",
        "big",
        "blockquote",
        "body",
        "br",
        "button",
        "center",
        "cite",
        "code",
        "col",
        "dd",
        "del",
        "details",
        "div",
        "dl",
        "dt",
        "em",
        "embed",
        "figcaption",
        "figure",
        "font",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "head",
        "header",
        "hr",
        "html",
        "i",
        "iframe",
        "img",
        "input",
        "ins",
        "kbd",
        "label",
        "li",
        "link",
        "mark",
        "meta",
        "nav",
        "object",
        "ol",
        "p",
        "picture",
        "pre",
        "q",
        "s",
        "script",
        "section",
        "select",
        "small",
        "source",
        "span",
        "strike",
        "strong",
        "style",
        "sub",
        "summary",
        "sup",
        "table",
        "tbody",
        "td",
        "textarea",
        "tfoot",
        "th",
        "thead",
        "time",
        "tr",
        "tt",
        "u",
        "ul",
        "video",
    ]
)
_TAG = re.compile(r"^<\s*/?\s*(?P<name>[A-Za-z][A-Za-z0-9-]*)(?P<attrs>[^>]*)")


def _is_html(raw: str) -> bool:
    """Raw HTML a reader would see as tags: a known element, a comment, a declaration."""
    text = raw.lstrip()
    if text.startswith(("<!--", "<?", "<!")):
        return True
    match = _TAG.match(text)
    if match is None or match["name"].lower() not in _HTML_ELEMENTS:
        return False
    attrs = match["attrs"].strip(" \t\n/")
    return not attrs or "=" in attrs  # ``<b>``, ``<br/>``, ``<a href=…>``; not ``a<b and c>``


# ``[text][label]`` left in text: a reference link whose label has no ``[label]: url`` line.
_UNDEFINED_REFERENCE = re.compile(r"\[[^\]]+\]\[(?P<label>[^\]]*)\]")
# A web address written without a link: readers' clients may or may not make it one.
_BARE_WWW = re.compile(r"(?<![\w/.@:\-\[(])www\.[^\s<>()\[\]]*[^\s<>()\[\].,;:!?'\"»”]")


@dataclass(frozen=True)
class FoundLink:
    """A link or image of the body, with where it starts (1-based, in the whole file)."""

    url: str
    line: int
    column: int
    image: bool = False
    alt: str = ""


def _children_by_line(inline: Token, first_line: int) -> Iterator[tuple[int, Token]]:
    """Each child of an ``inline`` token with the file line it is on."""
    line = first_line
    for child in inline.children or []:
        if child.type in {"softbreak", "hardbreak"}:
            line += 1
            continue
        yield line, child


def _inline_tokens(tokens: Sequence[Token], offset: int) -> Iterator[tuple[int, Token]]:
    for token in tokens:
        if token.type == "inline" and token.map:
            yield offset + token.map[0] + 1, token


class _Source:
    """The file's lines, to turn a piece of text found on a line into its column."""

    def __init__(self, lines: Sequence[str]) -> None:
        self._lines = lines

    def line(self, number: int) -> str:
        return self._lines[number - 1] if 0 < number <= len(self._lines) else ""

    def column(self, number: int, *needles: str, start: int = 0) -> int | None:
        text = self.line(number)
        for needle in needles:
            if needle:
                found = text.find(needle, start)
                if found >= 0:
                    return found + 1
        return None


def collect_links(tokens: Sequence[Token], *, lines: Sequence[str], offset: int) -> list[FoundLink]:
    """Every link and image of the body, located."""
    source = _Source(lines)
    found: list[FoundLink] = []
    for first, inline in _inline_tokens(tokens, offset):
        searched_from: dict[int, int] = {}
        for line, child in _children_by_line(inline, first):
            if child.type not in {"link_open", "image"}:
                continue
            image = child.type == "image"
            url = str(child.attrs.get("src" if image else "href", ""))
            start = searched_from.get(line, 0)
            column = source.column(line, url, unquote(url), start=start) or 1
            searched_from[line] = column
            alt = "".join(c.content for c in child.children or []) if image else ""
            found.append(FoundLink(url=url, line=line, column=column, image=image, alt=alt))
    return found


def link_problems(links: Sequence[FoundLink], *, file: str) -> list[Problem]:
    """Links that are not absolute http(s)/mailto URLs and images without alt text."""
    problems: list[Problem] = []
    for link in links:
        reason = link_wording(link.url, image=link.image)
        if reason is not None:
            problems.append(
                Problem.coded(
                    file,
                    link.line,
                    "%(why)s",
                    column=link.column,
                    hint="" if str(reason).endswith(")") else N_("write a full https:// address"),
                    check="links",
                    why=reason,
                )
            )
        if link.image and not link.alt.strip():
            problems.append(
                Problem.coded(
                    file,
                    link.line,
                    N_("image %(url)s has no alt text"),
                    column=link.column,
                    hint=N_("describe it for readers who do not see images: ![a map of …](…)"),
                    check="images",
                    url=link.url,
                )
            )
    return problems


# What is wrong with link or image syntax left in text, per kind (the languages decline them).
_FAILED = {
    ("gap", "link"): N_("link syntax with a space between ']' and '(': it shows as plain text"),
    ("gap", "image"): N_("image syntax with a space between ']' and '(': it shows as plain text"),
    ("unclosed", "link"): N_("unclosed link: no ')' after %(url)r; readers would see raw text"),
    ("unclosed", "image"): N_("unclosed image: no ')' after %(url)r; readers would see raw text"),
    ("space", "link"): N_("the link's URL %(url)r contains a space: readers would see raw text"),
    ("space", "image"): N_("the image's URL %(url)r contains a space: readers would see raw text"),
    ("other", "link"): N_("link syntax that does not form a link: readers would see raw text"),
    ("other", "image"): N_("image syntax that does not form an image: readers would see raw text"),
}
_FAILED_HINTS = {
    "gap": N_("write [text](https://…) with nothing between ']' and '('"),
    "unclosed": N_("close it with ')' right after the address"),
    "space": N_("remove the space or write it as %%20"),
    "other": N_("write [text](https://…)"),
}


def _failed_link(text: str, match: re.Match[str]) -> tuple[Wording, str]:
    """(what is wrong, what to do) for link or image syntax left in text."""
    opening = text.rfind("[", 0, match.start())
    kind = "image" if opening > 0 and text[opening - 1] == "!" else "link"
    rest = match["rest"]
    url = (rest.split() or [""])[0][:80]
    if match["gap"]:
        why = "gap"
    elif not match["close"]:
        why = "unclosed"
    elif any(c.isspace() for c in rest.strip()):
        why, url = "space", rest.strip()[:60]
    else:
        why = "other"
    return Wording.of(_FAILED[why, kind], url=url), _FAILED_HINTS[why]


def text_problems(
    tokens: Sequence[Token], *, lines: Sequence[str], offset: int, file: str
) -> list[Problem]:
    """Broken links and images, links without text and bare ``www.`` addresses."""
    source = _Source(lines)
    problems: list[Problem] = []
    for first, inline in _inline_tokens(tokens, offset):
        children = list(_children_by_line(inline, first))
        in_link = 0
        for index, (line, child) in enumerate(children):
            if child.type == "link_open":
                in_link += 1
                problems += _empty_link(children, index, source=source, file=file)
            elif child.type == "link_close":
                in_link -= 1
            if child.type != "text":
                continue
            for match in _UNDEFINED_REFERENCE.finditer(child.content):
                column = source.column(line, match.group(0))
                if column is None:
                    continue  # written with escapes: meant as text
                label = match["label"] or match.group(0).split("]")[0][1:]
                problems.append(
                    Problem.coded(
                        file,
                        line,
                        N_(
                            "the link reference [%(label)s] is not defined: "
                            "readers would see raw text"
                        ),
                        column=column,
                        hint=N_("add a line '[%(label)s]: https://…' or write [text](https://…)"),
                        check="links",
                        label=label,
                    )
                )
            if in_link:
                continue  # the text of a link: an address there is what the reader clicks
            for match in _FAILED_LINK.finditer(child.content):
                column = source.column(line, match.group(0))
                text = source.line(line)
                if column is None or text[column - 2 : column - 1] == "\\":
                    continue  # written with escapes (\[, \]): meant as text
                opening = text.rfind("[", 0, column - 1)
                column = opening + 1 if opening >= 0 else column
                if opening > 0 and text[opening - 1] == "!":
                    column -= 1
                message, hint = _failed_link(child.content, match)
                problems.append(
                    Problem.coded(
                        file,
                        line,
                        "%(why)s",
                        column=column,
                        hint=hint,
                        check="links",
                        why=message,
                    )
                )
            for match in _BARE_WWW.finditer(child.content):
                address = match.group(0)
                problems.append(
                    Problem.coded(
                        file,
                        line,
                        N_(
                            "%(address)s is not a link: a bare address stays plain text in the HTML"
                        ),
                        column=source.column(line, address) or 1,
                        hint=N_("write [text](https://%(address)s)"),
                        check="links",
                        address=address,
                    )
                )
    return problems


def _empty_link(
    children: Sequence[tuple[int, Token]], index: int, *, source: _Source, file: str
) -> list[Problem]:
    shown: list[str] = []
    for _line, child in children[index + 1 :]:
        if child.type == "link_close":
            break
        shown.append("image" if child.type == "image" else child.content)
    if "".join(shown).strip():
        return []
    line, link = children[index]
    url = str(link.attrs.get("href", ""))
    return [
        Problem.coded(
            file,
            line,
            N_("the link to %(url)s has no text: there is nothing to click"),
            column=source.column(line, "[](", "[") or 1,
            hint=N_("write [what the reader clicks](%(url)s)"),
            check="links",
            url=url,
        )
    ]


_RAW_HTML = N_("raw HTML %(tag)r is not rendered: readers would see it as text")


def html_problems(body: str, *, lines: Sequence[str], offset: int, file: str) -> list[Problem]:
    """Raw HTML: the renderer passes none (html is off), so readers would see the tags."""
    source = _Source(lines)
    tokens = MarkdownIt("commonmark", {"html": True}).parse(body)
    problems: list[Problem] = []
    hint = N_("use Markdown instead, e.g. **bold** or [text](https://…), or remove it")
    for token in tokens:
        block = token.content.lstrip()
        if token.type == "html_block" and token.map and _is_html(block) and block[:2] != "</":
            line = offset + token.map[0] + 1
            tag = token.content.strip().splitlines()[0][:40]
            problems.append(
                Problem.coded(
                    file,
                    line,
                    _RAW_HTML,
                    column=source.column(line, tag) or 1,
                    hint=hint,
                    check="markdown",
                    tag=tag,
                )
            )
    for first, inline in _inline_tokens(tokens, offset):
        for line, child in _children_by_line(inline, first):
            if (
                child.type == "html_inline"
                and not child.content.startswith("</")
                and _is_html(child.content)
            ):
                problems.append(
                    Problem.coded(
                        file,
                        line,
                        _RAW_HTML,
                        column=source.column(line, child.content) or 1,
                        hint=hint,
                        check="markdown",
                        tag=child.content[:40],
                    )
                )
    return problems


def body_problems(
    body: str, tokens: Sequence[Token], *, lines: Sequence[str], offset: int, file: str
) -> tuple[list[FoundLink], list[Problem]]:
    """The body's links, and every Markdown problem in it sorted by position.

    ``tokens`` is the body parsed in the issue dialect, ``lines`` the whole file (``offset``
    lines of header come before the body).
    """
    links = collect_links(tokens, lines=lines, offset=offset)
    problems = link_problems(links, file=file)
    problems += text_problems(tokens, lines=lines, offset=offset, file=file)
    problems += html_problems(body, lines=lines, offset=offset, file=file)
    problems.sort(key=lambda p: (p.line, p.column))
    return links, problems
