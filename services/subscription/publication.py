"""Who is speaking on the public pages: the publication's name, its pitch per language, its logo.

Built once from the settings (``NEWSLETTER_PUBLICATION_NAME``,
``NEWSLETTER_PUBLICATION_PITCH_EN`` / ``_BE`` / ``_RU``, ``NEWSLETTER_LOGO_URL``) and handed to
:class:`~services.subscription.pages.Pages`.
The sample defaults are the seed publication's wording.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from shared.settings import DEFAULT_PITCH, LANGUAGES, Settings

SAMPLE_NAME = "Weekly Digest"  # also a catalog string, so the sample name is translated


@dataclass(frozen=True)
class Publication:
    name: str = SAMPLE_NAME
    pitches: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PITCH))
    logo_url: str = ""  # empty: the inline SVG mark of ``templates/logo.svg``

    @classmethod
    def from_settings(cls, settings: Settings) -> Publication:
        return cls(
            name=settings.publication_name.strip() or SAMPLE_NAME,
            pitches={lang: settings.publication_pitch(lang) for lang in LANGUAGES},
            logo_url=settings.logo_url,
        )

    def pitch(self, language: str) -> str:
        return self.pitches.get(language) or self.pitches.get("en", "")

    @property
    def logo_origin(self) -> str:
        """The origin a logo ``<img>`` loads from, for the CSP (empty for the inline mark)."""
        if not self.logo_url:
            return ""
        parts = urlsplit(self.logo_url)
        return f"{parts.scheme}://{parts.netloc}"
