"""The text part reads like a letter: wrapped paragraphs, lists, quotes and link footnotes."""

from __future__ import annotations

from services.renderer.issue import markdown
from services.renderer.plaintext import Footnotes, blocks_text, wrap

SOURCE = """A paragraph with [a link](https://example.org/one) and [another](https://example.org/two),
and [the first again](https://example.org/one).

- first item that is long enough to need wrapping when the width is seventy-two characters
- second item

1. one
2. two

> A quoted sentence.
>
> Its second paragraph.

![A map of the region](https://example.org/map.png)

### A subheading
"""


def test_blocks_become_readable_text_with_numbered_footnotes() -> None:
    notes = Footnotes()
    text = blocks_text(markdown().parse(SOURCE), notes, image_label="Image")
    assert "with a link [1] and another [2]," in text
    assert "the first again [1]." in text
    assert notes.lines() == ["[1] https://example.org/one", "[2] https://example.org/two"]
    assert (
        "* first item that is long enough to need wrapping when the width is\n  seventy-two" in text
    )
    assert "* first item" in text
    assert "\n* second item" in text
    assert "1. one\n2. two" in text
    assert "> A quoted sentence.\n>\n> Its second paragraph." in text
    assert "[Image: A map of the region]" in text
    assert "A subheading\n------------" in text
    assert all(len(line) <= 72 for line in text.splitlines())


def test_wrap_never_breaks_a_url() -> None:
    url = "https://example.org/" + "x" * 100
    assert url in wrap(f"see {url} now").splitlines()
