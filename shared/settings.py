"""Process settings, read once from ``NEWSLETTER_*`` environment variables and passed down.

Nothing here is read at import time: each composition root calls :func:`load_settings`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from datetime import time
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Mode = Literal["production", "demo", "test"]
LANGUAGES: tuple[str, ...] = ("en", "be", "ru")
_PLACEHOLDER_SECRETS = {"", "changethis", "change-me", "changeme", "secret", "dev"}
_MIN_SECRET_LENGTH = 32
_MIN_ADMIN_TOKEN_LENGTH = 32
# Domains reserved for documentation (RFC 2606): mail "from" them fails SPF/DMARC everywhere.
_EXAMPLE_DOMAINS = ("example.org", "example.com", "example.net")
DEMO_KEY_FILENAME = "secret-key"
DEFAULT_PITCH: dict[str, str] = {
    "en": (
        "Once a week, in coordination with a group of prominent Belarusian analysts, we "
        "provide analytical commentaries on the most topical and relevant issues, including "
        "the behind-the-scenes processes occurring in Belarus. These commentaries are "
        "available in Belarusian, Russian, and English."
    ),
    "be": (
        "Раз на тыдзень разам з групай вядомых беларускіх аналітыкаў мы публікуем аналітычныя "
        "каментары пра самыя актуальныя і важныя падзеі, у тым ліку пра закулісныя працэсы, "
        "што адбываюцца ў Беларусі. Каментары выходзяць па-беларуску, па-руску і па-англійску."
    ),
    "ru": (
        "Раз в неделю вместе с группой известных белорусских аналитиков мы публикуем "
        "аналитические комментарии о самых актуальных и важных событиях, в том числе о "
        "закулисных процессах, происходящих в Беларуси. Комментарии выходят на белорусском, "
        "русском и английском языках."
    ),
}


class SettingsError(ValueError):
    """A setting is missing or unusable; the message says what to set."""


class SmtpTarget:
    """The parsed form of ``NEWSLETTER_SMTP_URL``."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps", "smtp+starttls"}:
            raise SettingsError(
                f"NEWSLETTER_SMTP_URL must start with smtp://, smtps:// or smtp+starttls://, "
                f"not {parts.scheme!r}"
            )
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.username = parts.username
        self.password = parts.password
        self.use_tls = parts.scheme == "smtps"
        self.start_tls = parts.scheme == "smtp+starttls"


class DatabaseSettings(BaseSettings):
    """Just the database: what one-shot steps such as migrations need, and no secret."""

    model_config = SettingsConfigDict(
        env_prefix="NEWSLETTER_", extra="ignore", populate_by_name=True
    )

    # SQLAlchemy URL of the suite's database: sqlite:///path or postgresql://user:pw@host/db.
    database_url: str = "sqlite:///./var/newsletter.db"


class Settings(DatabaseSettings):
    """Settings common to every process of the suite."""

    # production refuses weak secrets; demo and test fill in throw-away ones.
    mode: Mode = "production"
    # RabbitMQ, with credentials and vhost: amqp://user:password@host:5672/vhost.
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # Where mail is handed over: smtp://, smtps:// (TLS) or smtp+starttls://, user:pw@ optional.
    smtp_url: str = "smtp://127.0.0.1:1025"
    # Seconds one SMTP command may take.
    smtp_timeout_s: float = 30.0
    # Base URL of the signup, confirmation and unsubscribe pages as readers reach them.
    public_url: str = "http://127.0.0.1:8000"
    # Production only: accept an http:// NEWSLETTER_PUBLIC_URL (a local stack without TLS).
    allow_http: bool = False
    # Signs every token in mails and forms; demo mode keeps a generated one in var/secret-key.
    secret_key: SecretStr = SecretStr("")
    # Bearer token of the admin API and pages (at least 32 characters in production).
    admin_token: SecretStr = SecretStr("")
    # Wrong bearer tokens one client (an IPv4 address or IPv6 /64) may send the subscription or
    # renderer admin API within 5 minutes; past them its bearer requests answer 429 with
    # Retry-After, the right token too, until the window frees one. Per process; 0: no limit.
    admin_api_failures_allowed: int = 20
    # From address of every mail; the display name is localized per message.
    from_: str = Field(default="Weekly Digest <digest@example.org>", alias="NEWSLETTER_FROM")
    # Domain of the VERP return path (bounces+token@domain); empty: the sender's domain.
    bounce_domain: str = ""
    # List-Id header of issue mails.
    list_id: str = "weekly-digest.example.org"
    # DEBUG, INFO, WARNING or ERROR.
    log_level: str = "INFO"
    # auto: pretty on a terminal, JSON otherwise.
    log_format: Literal["auto", "json", "console"] = "auto"
    # Where processes keep local state (demo key, SQLite database, logs).
    var_dir: Path = Path("./var")
    # Address the HTTP servers and probes listen on.
    http_host: str = "127.0.0.1"
    # Proxies whose X-Forwarded-For the subscription service believes (uvicorn's
    # forwarded_allow_ips: addresses or networks, comma-separated): behind a proxy on another
    # host, its address, or every client counts as the proxy for the per-client limits.
    forwarded_allow_ips: str = "127.0.0.1,::1"
    # Port of the subscription pages and admin API.
    subscription_port: int = 8000
    # Port of the subscription service's /healthz answered off its event loop (a child process;
    # not queued behind signups under a rush, 503 if the loop stops beating); 0: not opened.
    subscription_health_port: int = 0
    # Port of the renderer's probes, archive and editor pages.
    renderer_probe_port: int = 9101
    # Port of the dispatcher's probes and metrics.
    dispatcher_probe_port: int = 9102

    # --- The publication's public face: name, pitch and logo of the signup pages ---
    # Kept apart from the production checks above. The defaults are the seed publication's
    # wording, a sample to replace with one's own.
    publication_name: str = "Weekly Digest"
    publication_pitch_en: str = DEFAULT_PITCH["en"]
    publication_pitch_be: str = DEFAULT_PITCH["be"]
    publication_pitch_ru: str = DEFAULT_PITCH["ru"]
    logo_url: str = ""  # empty: the built-in inline SVG mark; else an http(s) image URL

    # --- Schedules (issue 17): local delivery hours, quiet hours, warm-up ---

    # A reader's zone when they gave none: LANGUAGE=IANA zone, comma-separated.
    default_time_zones: str = "en=Europe/London,be=Europe/Minsk,ru=Europe/Minsk"
    # No issue mail between these local hours ("22:00-07:00"); empty: no quiet hours.
    quiet_hours: str = ""
    # How often each dispatcher's scheduler looks for scheduled sends that are due.
    schedule_poll_s: float = 5.0
    # Daily caps per receiving domain while a sending domain warms up (day 1, day 2, ...).
    warmup_caps: str = "50,100,200,400,800,1600,3200"

    # --- Editorial analytics (issue 18): aggregate counts only, no reader identified ---

    # Seconds between two writes of the click counts (kept in memory until then).
    click_flush_s: float = Field(default=2.0, gt=0)
    # Seconds in which one client following every tracked link of a mail is a scanner burst.
    click_burst_window_s: float = Field(default=10.0, ge=0)
    # Open pixel in issue mails (aggregate loads per edition and day; machine-inflated).
    open_tracking: bool = False
    # Per-reader clicks, only of readers who ticked the consent box (opt-in or preferences;
    # ledgered, in the GDPR export, deleted on erasure). Off: no table holds a subscriber id.
    per_reader_analytics: bool = False
    # Seconds between two deletions of the per-reader clicks of readers who withdrew consent.
    reader_click_sweep_s: float = Field(default=60.0, gt=0)

    @field_validator("public_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise SettingsError(f"NEWSLETTER_PUBLIC_URL must be an http(s) URL, not {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _require_real_secrets(self) -> Settings:
        key = self.secret_key.get_secret_value()
        if self.mode == "production":
            if key.lower() in _PLACEHOLDER_SECRETS or len(key) < _MIN_SECRET_LENGTH:
                raise SettingsError(
                    "NEWSLETTER_SECRET_KEY is missing or too weak: set it to a random string "
                    f"of at least {_MIN_SECRET_LENGTH} characters, for example the output of "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(48))'` "
                    "(or set NEWSLETTER_MODE=demo for a throw-away local run)"
                )
            self._refuse_unsafe_production_values()
        else:
            if not key:
                self.secret_key = SecretStr(
                    self._demo_key() if self.mode == "demo" else secrets.token_urlsafe(48)
                )
            if not self.admin_token.get_secret_value():
                self.admin_token = SecretStr("demo-admin-token")
        self.sender  # noqa: B018 - validate the sender address early
        return self

    def _demo_key(self) -> str:
        try:
            return demo_secret_key(self.var_dir)
        except OSError as err:
            raise SettingsError(
                f"demo mode keeps its key in {self.var_dir / DEMO_KEY_FILENAME} but cannot "
                f"({err.strerror}): set NEWSLETTER_VAR_DIR to a writable folder, or set "
                "NEWSLETTER_SECRET_KEY"
            ) from err

    def _refuse_unsafe_production_values(self) -> None:
        token = self.admin_token.get_secret_value()
        if not token:
            raise SettingsError(
                "NEWSLETTER_ADMIN_TOKEN is missing: set it to a random string; the admin "
                "API and pages expect it as a bearer token"
            )
        if len(token) < _MIN_ADMIN_TOKEN_LENGTH:
            raise SettingsError(
                f"NEWSLETTER_ADMIN_TOKEN is too short ({len(token)} characters): set it to a "
                f"random string of at least {_MIN_ADMIN_TOKEN_LENGTH} characters, for example "
                "the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        if urlsplit(self.public_url).scheme == "http" and not self.allow_http:
            raise SettingsError(
                f"NEWSLETTER_PUBLIC_URL is {self.public_url!r}: the unsubscribe and preference "
                "links in every mail would be plain http; set NEWSLETTER_PUBLIC_URL to the "
                "https:// address readers reach, or set NEWSLETTER_ALLOW_HTTP=true for a local "
                "stack without TLS"
            )
        domain = self.sender.domain.lower().rstrip(".")
        if any(domain == d or domain.endswith("." + d) for d in _EXAMPLE_DOMAINS):
            raise SettingsError(
                f"NEWSLETTER_FROM is on {domain}, a domain reserved for examples that no "
                "mailbox provider accepts mail from: set NEWSLETTER_FROM to an address on your "
                "own domain, e.g. 'Weekly Digest <digest@news.your-domain.tld>'"
            )

    @property
    def sender(self) -> Address:
        """The ``From`` address; the display name is localized per message."""
        name, addr = parseaddr(self.from_)
        if "@" not in addr or any(c in self.from_ for c in "\r\n\0"):
            raise SettingsError(f"NEWSLETTER_FROM is not a usable address: {self.from_!r}")
        local, _, domain = addr.rpartition("@")
        return Address(display_name=name, username=local, domain=domain)

    @field_validator("logo_url")
    @classmethod
    def _logo_is_a_web_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in {"http", "https"}:
            raise SettingsError(f"NEWSLETTER_LOGO_URL must be an http(s) URL, not {value!r}")
        return value

    @field_validator("default_time_zones")
    @classmethod
    def _known_zones(cls, value: str) -> str:
        parse_zone_defaults(value)
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_window(cls, value: str) -> str:
        parse_quiet_hours(value)
        return value

    @field_validator("warmup_caps")
    @classmethod
    def _caps(cls, value: str) -> str:
        parse_caps(value)
        return value

    def time_zone_for(self, language: str) -> str:
        """The zone of a reader of ``language`` who gave none."""
        zones = parse_zone_defaults(self.default_time_zones)
        return zones.get(language, zones.get("en", "UTC"))

    @property
    def quiet_window(self) -> tuple[time, time] | None:
        return parse_quiet_hours(self.quiet_hours)

    @property
    def warmup_cap_list(self) -> tuple[int, ...]:
        return parse_caps(self.warmup_caps)

    def publication_pitch(self, language: str) -> str:
        """The signup pitch in ``language`` (English for a language without one)."""
        pitches = {
            "en": self.publication_pitch_en,
            "be": self.publication_pitch_be,
            "ru": self.publication_pitch_ru,
        }
        return pitches.get(language, self.publication_pitch_en)

    @property
    def smtp(self) -> SmtpTarget:
        return SmtpTarget(self.smtp_url)

    @property
    def return_path_domain(self) -> str:
        """Domain of the VERP return path (``bounces+token@domain``)."""
        return self.bounce_domain or self.sender.domain


def parse_zone_defaults(value: str) -> dict[str, str]:
    """``"en=Europe/London,be=Europe/Minsk"`` -> ``{"en": "Europe/London", ...}``."""
    zones: dict[str, str] = {}
    for item in filter(None, (v.strip() for v in value.split(","))):
        language, sep, zone = item.partition("=")
        try:
            ZoneInfo(zone.strip())
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise SettingsError(
                f"NEWSLETTER_DEFAULT_TIME_ZONES: {item!r} must be LANGUAGE=ZONE with an IANA "
                "zone such as Europe/Minsk"
            ) from err
        if not sep or language.strip() not in LANGUAGES:
            raise SettingsError(
                f"NEWSLETTER_DEFAULT_TIME_ZONES: {item!r} must start with one of {LANGUAGES}"
            )
        zones[language.strip()] = zone.strip()
    return zones


def parse_quiet_hours(value: str) -> tuple[time, time] | None:
    """``"22:00-07:00"`` -> ``(22:00, 07:00)``; empty -> None."""
    if not value.strip():
        return None
    start, sep, end = value.partition("-")
    try:
        window = (time.fromisoformat(start.strip()), time.fromisoformat(end.strip()))
    except ValueError as err:
        raise SettingsError(
            f"NEWSLETTER_QUIET_HOURS must be HH:MM-HH:MM such as 22:00-07:00, not {value!r}"
        ) from err
    if not sep or window[0] == window[1]:
        raise SettingsError(f"NEWSLETTER_QUIET_HOURS must be two different times, not {value!r}")
    return window


def parse_caps(value: str) -> tuple[int, ...]:
    """``"50,100,200"`` -> ``(50, 100, 200)``: every cap a positive whole number."""
    try:
        caps = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as err:
        raise SettingsError(
            f"NEWSLETTER_WARMUP_CAPS must be whole numbers, comma-separated, not {value!r}"
        ) from err
    if not caps or any(c <= 0 for c in caps):
        raise SettingsError(f"NEWSLETTER_WARMUP_CAPS must be positive numbers, not {value!r}")
    return caps


def demo_secret_key(var_dir: Path) -> str:
    """The demo's secret key, generated once into ``var_dir/secret-key`` (mode 0600).

    Every process started by hand in demo mode reads the same key, so the links one process
    signs (preferences, one-click unsubscribe) verify in another. The file is written under a
    temporary name and linked into place, so processes starting together agree on one key.
    """
    path = var_dir / DEMO_KEY_FILENAME
    try:
        existing = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        existing = ""
    if len(existing) >= _MIN_SECRET_LENGTH:
        return existing
    var_dir.mkdir(parents=True, exist_ok=True)
    temporary = var_dir / f".{DEMO_KEY_FILENAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_urlsafe(48) + "\n")
        if existing:  # an unusable (empty or short) file: replace it
            os.replace(temporary, path)
        else:
            with contextlib.suppress(FileExistsError):  # another process won: use its key
                os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_text(encoding="ascii").strip()


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; keyword overrides win (used by the CLI and tests)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except SettingsError:
        raise
    except ValueError as err:  # pydantic wraps validator errors
        raise SettingsError(_first_message(err)) from err


def _first_message(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):
        found = errors()
        if found:
            return str(found[0].get("msg", err))
    return str(err)
