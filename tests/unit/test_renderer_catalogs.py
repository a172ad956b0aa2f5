"""The translation catalogs cover every interface string, and the template catalog is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from services.renderer.catalogs import LOCALES_DIR, Templates

RENDERER = Path(__file__).resolve().parents[2] / "services" / "renderer"


def msgids(path: Path) -> set[str]:
    with path.open("rb") as po:
        return {m.id for m in read_po(po) if m.id}  # type: ignore[misc]


@pytest.mark.parametrize("language", ["be", "ru"])
def test_every_string_of_the_template_catalog_is_translated(language: str) -> None:
    with (LOCALES_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=language)
    expected = msgids(LOCALES_DIR / "messages.pot")
    translated = {m.id for m in catalog if m.id and m.string and not m.fuzzy}
    assert expected <= translated, f"untranslated in {language}: {sorted(expected - translated)}"


def test_the_template_catalog_matches_the_strings_in_code_and_templates(tmp_path: Path) -> None:
    target = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            str(RENDERER / "babel.cfg"),
            "-k",
            "N_",
            "--no-location",
            "--omit-header",
            "-o",
            str(target),
            str(RENDERER),
        ],
        check=True,
        capture_output=True,
    )
    assert msgids(target) == msgids(LOCALES_DIR / "messages.pot"), (
        "run the pybabel extract/update commands in services/renderer/catalogs.py"
    )


def test_placeholders_in_translations_match_the_source() -> None:
    templates = Templates()
    for language in ("be", "ru"):
        text = templates.gettext(language, "Issue %(number)s", number=50)
        assert text == "Выпуск 50"
