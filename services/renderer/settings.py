"""The renderer's settings: the common ones plus where its public pages live."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import field_validator

from shared.settings import Settings, SettingsError


class RendererSettings(Settings):
    """``NEWSLETTER_ARCHIVE_URL``: public base URL of the view-in-browser, archive and feed pages
    (served by the renderer on ``renderer_probe_port``, reached by readers through the public
    origin); empty means ``NEWSLETTER_PUBLIC_URL``, so no mail or page links an internal port.
    ``NEWSLETTER_ISSUES_DIR``: where the editor page finds issue folders and stores uploads.
    ``NEWSLETTER_PREFLIGHT_SPAM``: whether sends started from the editor page and the admin API
    run SpamAssassin first (about a second per edition; the CLI has ``--spam/--no-spam``).
    """

    archive_url: str = ""
    issues_dir: Path = Path("./deploy")
    preflight_spam: bool = True

    @field_validator("archive_url")
    @classmethod
    def _check_archive_url(cls, value: str) -> str:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in {"http", "https"} or not parts.netloc:
                raise SettingsError(f"NEWSLETTER_ARCHIVE_URL must be an http(s) URL, not {value!r}")
        return value.rstrip("/")

    @property
    def pages_url(self) -> str:
        return self.archive_url or self.public_url.rstrip("/")


def load_renderer_settings(**overrides: object) -> RendererSettings:
    """Read the environment once (keyword overrides win), with the suite's error messages."""
    try:
        return RendererSettings(**overrides)  # type: ignore[arg-type]
    except SettingsError:
        raise
    except ValueError as err:  # pydantic wraps validator errors
        errors = getattr(err, "errors", None)
        found = errors() if callable(errors) else []
        message = str(found[0].get("msg", err)) if found else str(err)
        raise SettingsError(message.removeprefix("Value error, ")) from err


def from_settings(settings: Settings, **extra: object) -> RendererSettings:
    """Widen already-loaded common settings (tests pass the ``settings`` fixture)."""
    if isinstance(settings, RendererSettings) and not extra:
        return settings
    values = settings.model_dump(by_alias=False)
    values["from_"] = values.pop("from_", settings.from_)
    return RendererSettings.model_validate({**values, **extra})
