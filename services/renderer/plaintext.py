"""The plain-text part, written for reading: wrapped paragraphs, real lists, quotes, and links
as numbered footnotes collected at the end (``OSCE event [1]`` ... ``[1] https://...``).

Works on the markdown-it tokens of :mod:`services.renderer.issue`, not on the HTML.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from markdown_it.token import Token

WIDTH = 72


@dataclass
class Footnotes:
    """Numbered link targets shared by every article of one mail."""

    urls: list[str] = field(default_factory=list)

    def number(self, url: str) -> int:
        if url not in self.urls:
            self.urls.append(url)
        return self.urls.index(url) + 1

    def lines(self) -> list[str]:
        return [f"[{n}] {url}" for n, url in enumerate(self.urls, start=1)]


def wrap(text: str, *, indent: str = "", first: str | None = None, width: int = WIDTH) -> str:
    """Wrap without ever breaking a word or a URL."""
    return textwrap.fill(
        " ".join(text.split()),
        width=width,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def inline_text(token: Token | None, notes: Footnotes, *, image_label: str) -> str:
    """One inline token as text; links get a footnote number after their words."""
    if token is None:
        return ""
    out: list[str] = []
    href: str | None = None
    for child in token.children or []:
        kind = child.type
        if kind in {"text", "code_inline"}:
            out.append(child.content)
        elif kind in {"softbreak", "hardbreak"}:
            out.append(" ")
        elif kind == "link_open":
            href = str(child.attrs.get("href", ""))
        elif kind == "link_close" and href is not None:
            out.append(f" [{notes.number(href)}]")
            href = None
        elif kind == "image":
            alt = "".join(c.content for c in child.children or [])
            out.append(f"[{image_label}: {alt}]")
    return "".join(out)


def blocks_text(  # noqa: PLR0912 - one branch per token kind
    tokens: list[Token], notes: Footnotes, *, image_label: str
) -> str:
    """Block tokens (paragraphs, lists, quotes, subheadings) as readable text."""
    blocks: list[tuple[str, bool]] = []  # (text, is a list item)
    quote_depth = 0
    lists: list[list[int]] = []  # per open list: [next number] or [] when bulleted
    item_first_line = False
    for index, token in enumerate(tokens):
        kind = token.type
        quote = "> " * quote_depth
        if kind == "blockquote_open":
            quote_depth += 1
        elif kind == "blockquote_close":
            quote_depth -= 1
        elif kind == "bullet_list_open":
            lists.append([])
        elif kind == "ordered_list_open":
            lists.append([int(token.attrs.get("start", 1) or 1)])
        elif kind in {"bullet_list_close", "ordered_list_close"}:
            lists.pop()
        elif kind == "list_item_open":
            item_first_line = True
        elif kind == "inline":
            text = inline_text(token, notes, image_label=image_label)
            previous = tokens[index - 1] if index else None
            if previous is not None and previous.type == "heading_open":
                blocks.append((f"{quote}{text}\n{quote}{'-' * min(len(text), WIDTH)}", False))
            elif lists:
                indent = "   " * (len(lists) - 1)
                counter = lists[-1]
                bullet = "  "
                if item_first_line:
                    bullet = "* "
                    if counter:
                        bullet = f"{counter[0]}. "
                        counter[0] += 1
                    item_first_line = False
                first, rest = quote + indent + bullet, quote + indent + " " * len(bullet)
                blocks.append((wrap(text, first=first, indent=rest), True))
            else:
                blocks.append((wrap(text, indent=quote), False))
        elif kind in {"fence", "code_block"}:
            blocks.append((textwrap.indent(token.content.rstrip("\n"), "    "), False))
        elif kind == "hr":
            blocks.append(("* * *", False))
    out: list[str] = []
    previous_item = False
    for text, is_item in blocks:
        if out and not (is_item and previous_item):
            # Inside a quote the blank line keeps its ">" so the quote reads as one.
            out.append(">" if text.startswith(">") and out[-1].startswith(">") else "")
        out.append(text)
        previous_item = is_item
    return "\n".join(out)
