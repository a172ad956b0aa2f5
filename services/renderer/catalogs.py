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

from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import jinja2
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from shared.settings import Settings

LOCALES_DIR = Path(__file__).with_name("locales")
TEMPLATES_DIR = Path(__file__).with_name("templates")
TRANSLATED: tuple[str, ...] = ("be", "ru")


def N_(message: str) -> str:  # noqa: N802 - the gettext convention for "mark for extraction"
    """Mark a string for extraction without translating it here."""
    return message


# The seed publication's name. As long as the settings keep it, it is a catalog string (and the
# mails keep the seed's wording, which declines it: "у Штотыднёвым дайджэсце"); any other
# name is shown as set, in every language.
SAMPLE_NAME = N_("Weekly Digest")


@dataclass(frozen=True)
class Publication:
    """Who signs the mails and pages: ``NEWSLETTER_PUBLICATION_NAME`` and ``NEWSLETTER_LOGO_URL``
    (empty: the seed's name, and no logo image in mails)."""

    name: str = SAMPLE_NAME
    logo_url: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Publication:
        return cls(
            name=settings.publication_name.strip() or SAMPLE_NAME, logo_url=settings.logo_url
        )

    @property
    def is_sample(self) -> bool:
        return self.name == SAMPLE_NAME


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

    def __init__(
        self, templates_dir: Path = TEMPLATES_DIR, *, publication: Publication | None = None
    ) -> None:
        self._dir = templates_dir
        self.publication = publication or Publication()
        self._envs: dict[str, jinja2.Environment] = {}
        self._translations: dict[str, NullTranslations] = {}

    def translations(self, language: str) -> NullTranslations:
        if language not in self._translations:
            self._translations[language] = load_translations(language)
        return self._translations[language]

    def gettext(self, language: str, message: str, /, **values: object) -> str:
        text = self.translations(language).gettext(message)
        return text % values if values else text

    def publication_name(self, language: str) -> str:
        """The publication's name as readers of ``language`` see it."""
        name = self.publication.name
        return self.gettext(language, name) if self.publication.is_sample else name

    def named(self, language: str, sample: str, other: str, /, **values: object) -> str:
        """``sample`` (the seed's wording, which names the seed publication) while the name is
        the seed's, else ``other`` with the name as ``%(name)s``."""
        if self.publication.is_sample:
            return self.gettext(language, sample, **values)
        return self.gettext(language, other, name=self.publication.name, **values)

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
            env.globals.update(
                publication_name=self.publication_name(language),
                sample_name=self.publication.is_sample,
                logo_url=self.publication.logo_url,
            )
            self._envs[language] = env
        return self._envs[language]
