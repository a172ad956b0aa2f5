"""Line wrapping keeps every HTML line short without changing what the HTML shows."""

from __future__ import annotations

import re

from services.renderer.lines import SMTP_LINE_LIMIT, longest_line, wrap_html

CYRILLIC = "Беларускі рэжым робіць асцярожныя спробы вярнуцца да ўлюбёнай тактыкі. " * 40


def _collapse(html: str) -> str:
    return re.sub(r"\s+", " ", html)


def test_a_long_cyrillic_paragraph_is_broken_below_the_smtp_limit() -> None:
    html = f'<p style="margin: 0 0 16px 0; color: #1d2329">{CYRILLIC}</p>'
    assert longest_line(html) > SMTP_LINE_LIMIT
    wrapped = wrap_html(html)
    assert longest_line(wrapped) <= 200
    assert _collapse(wrapped) == _collapse(html)


def test_attribute_values_and_preformatted_text_are_never_broken() -> None:
    url = "https://example.org/" + "a%20b" * 10
    html = (
        f'<a href="{url}" title="a title with several words in it">x</a>'
        f"<pre>{'keep these spaces ' * 20}</pre>" + "<p>" + "word " * 100 + "</p>"
    )
    wrapped = wrap_html(html, width=40)
    assert f'href="{url}"' in wrapped
    assert 'title="a title with several words in it"' in wrapped
    assert "<pre>" + "keep these spaces " * 20 + "</pre>" in wrapped
    assert longest_line(wrapped.split("</pre>")[1]) <= 45


def test_long_tags_break_between_attributes() -> None:
    html = "<td " + " ".join(f'data-x{i}="{i}"' for i in range(40)) + ">x</td>"
    wrapped = wrap_html(html, width=60)
    assert longest_line(wrapped) <= 70
    assert _collapse(wrapped) == _collapse(html)
