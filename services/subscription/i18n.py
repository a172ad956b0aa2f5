"""Page translations: gettext catalogs (``locales/<lang>/LC_MESSAGES/messages.po``) and one
Jinja2 environment per language with the ``i18n`` extension.

The ``.po`` files are the source of truth and are compiled to ``.mo`` form in memory when the
app starts (Babel's ``write_mo``), so no compiled binary is committed and none can go stale.
English is the source language: its catalog maps each string to itself.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import Environment, FileSystemLoader, select_autoescape

from shared.settings import LANGUAGES

PACKAGE_DIR = Path(__file__).resolve().parent
LOCALES_DIR = PACKAGE_DIR / "locales"
TEMPLATES_DIR = PACKAGE_DIR / "templates"
DOMAIN = "messages"


def catalog_path(language: str) -> Path:
    return LOCALES_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def load_translations(language: str) -> Translations:
    """Compile the language's ``.po`` file in memory and load it."""
    with catalog_path(language).open("rb") as source:
        catalog = read_po(source, locale=language, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(fp=compiled, domain=DOMAIN)


def page_environments() -> dict[str, Environment]:
    """One autoescaping environment per page language, translations installed."""
    environments: dict[str, Environment] = {}
    for language in LANGUAGES:
        environment = Environment(
            loader=FileSystemLoader(TEMPLATES_DIR),
            autoescape=select_autoescape(["html"], default=True),
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # templates ship with the code: no stat() per render
        )
        environment.install_gettext_translations(  # type: ignore[attr-defined]
            load_translations(language), newstyle=True
        )
        environments[language] = environment
    return environments
