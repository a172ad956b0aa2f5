"""Every page string is translated into Belarusian and Russian, and pages render per language."""

from __future__ import annotations

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from services.subscription import page_texts
from services.subscription.i18n import TEMPLATES_DIR, catalog_path, page_environments


def _page_strings() -> set[str]:
    found = {
        str(message)
        for _, _, message, *_ in extract_from_dir(
            str(TEMPLATES_DIR), method_map=[("**.html", "jinja2")], options_map={"**.html": {}}
        )
    }
    found |= {v for k, v in vars(page_texts).items() if k.isupper() and isinstance(v, str)}
    return found


@pytest.mark.parametrize("language", ["be", "ru"])
def test_every_page_string_has_a_translation(language: str) -> None:
    with catalog_path(language).open("rb") as source:
        catalog = read_po(source, locale=language)
    translated = {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy}
    missing = sorted(s for s in _page_strings() if s not in translated)
    assert not missing, f"{language}: untranslated page strings: {missing}"
    same = [s for s in _page_strings() if translated.get(s) == s]
    assert not same, f"{language}: strings left in English: {same}"


def test_signup_form_renders_in_each_language_with_lang_and_labels() -> None:
    environments = page_environments()
    expected = {
        "en": "Email address",
        "be": "Адрас электроннай пошты",
        "ru": "Адрес электронной почты",
    }
    for language, label in expected.items():
        html = (
            environments[language]
            .get_template("signup.html")
            .render(
                lang=language,
                switch_links=[],
                language_names={"en": "English"},
                csrf_token="t",
                form_stamp="s",
                email="<script>{{7*7}}</script>",
                chosen=[language],
                error=None,
            )
        )
        assert f'<html lang="{language}">' in html
        assert f'<label for="email">{label}</label>' in html
        assert "<script>{{7*7}}" not in html
        assert "&lt;script&gt;{{7*7}}" in html
