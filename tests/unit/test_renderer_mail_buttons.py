"""A mail button keeps its own colours after premailer: on the link itself, readable (WCAG AA).

premailer merges every matching rule into the ``style`` attribute, so a generic ``.content a``
rule used to paint the confirmation button's text link-blue and underlined on dark red (1.3:1).
"""

from __future__ import annotations

import re

import pytest
from lxml import html as lxml_html

from services.renderer.catalogs import Templates
from services.renderer.render import render_transactional

AA_NORMAL_TEXT = 4.5


def _declarations(style: str) -> dict[str, str]:
    pairs = (part.split(":", 1) for part in style.split(";") if ":" in part)
    return {name.strip().lower(): value.strip().lower() for name, value in pairs}


def _luminance(colour: str) -> float:
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    assert re.fullmatch(r"[0-9a-f]{6}", digits), f"not a hex colour: {colour!r}"
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(first: str, second: str) -> float:
    high, low = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_contrast_matches_known_values() -> None:
    assert contrast("#000", "#fff") == pytest.approx(21.0)
    assert contrast("#1a5fb4", "#9c1c1c") < 1.5  # the old confirmation button


@pytest.mark.parametrize("language", ["en", "be", "ru"])
def test_confirmation_button_is_white_on_dark_red_on_the_link_itself(language: str) -> None:
    mail = render_transactional(
        Templates(),
        kind="confirmation",
        language=language,
        links={"confirm_url": "https://news.example.org/confirm?token=t"},
    )
    [button] = lxml_html.fromstring(mail.html).xpath('//a[contains(@class, "button")]')
    style = _declarations(button.get("style", ""))
    ratio = contrast(style["color"], style["background-color"])
    assert ratio >= AA_NORMAL_TEXT, f"button text {style['color']} on {style['background-color']}"
    assert style["text-decoration"] == "none", style
    cell = button.getparent()
    assert _declarations(cell.get("style", ""))["background-color"] == style["background-color"]
