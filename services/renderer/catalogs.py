"""Interface strings: gettext catalogs (Babel) and the Jinja2 environments that use them.

The ``.po`` files under ``locales/<lang>/LC_MESSAGES/messages.po`` are the source of truth; they
are compiled in memory when a process builds its :class:`Templates` (a few dozen strings, a few
milliseconds), so a stale ``.mo`` can never ship. English is the source language.

Regenerate the template after changing strings::

    pybabel extract -F services/renderer/babel.cfg -k N_ --no-location --omit-header \
        -o services/renderer/locales/messages.pot services/renderer
    pybabel update -i services/renderer/locales/messages.pot -d services/renderer/locales
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import jinja2
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALES_DIR = Path(__file__).with_name("locales")
TEMPLATES_DIR = Path(__file__).with_name("templates")
TRANSLATED: tuple[str, ...] = ("be", "ru")


def N_(message: str) -> str:  # noqa: N802 - the gettext convention for "mark for extraction"
    """Mark a string for extraction without translating it here."""
    return message


def load_translations(language: str) -> NullTranslations:
    """The compiled catalog of ``language`` (English, the source language, needs none)."""
    if language not in TRANSLATED:
        return NullTranslations()
    path = LOCALES_DIR / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as po:
        catalog = read_po(po, locale=language)
    buffer = BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


class Templates:
    """One Jinja2 environment per language: autoescape on, undefined variables are errors."""

    def __init__(self, templates_dir: Path = TEMPLATES_DIR) -> None:
        self._dir = templates_dir
        self._envs: dict[str, jinja2.Environment] = {}
        self._translations: dict[str, NullTranslations] = {}

    def translations(self, language: str) -> NullTranslations:
        if language not in self._translations:
            self._translations[language] = load_translations(language)
        return self._translations[language]

    def gettext(self, language: str, message: str, /, **values: object) -> str:
        text = self.translations(language).gettext(message)
        return text % values if values else text

    def env(self, language: str) -> jinja2.Environment:
        if language not in self._envs:
            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(self._dir),
                autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
                undefined=jinja2.StrictUndefined,
                extensions=["jinja2.ext.i18n"],
                keep_trailing_newline=True,
                trim_blocks=True,
                lstrip_blocks=True,
            )
            env.install_gettext_translations(  # type: ignore[attr-defined]
                self.translations(language), newstyle=True
            )
            self._envs[language] = env
        return self._envs[language]
