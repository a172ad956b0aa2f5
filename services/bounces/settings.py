"""Settings of the bounce receiver, on top of the suite's common ``NEWSLETTER_*`` settings."""

from __future__ import annotations

from pydantic import SecretStr

from shared.settings import Settings, SettingsError

DEFAULT_SNS_CERT_HOSTS = r"^sns\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?$"


class BouncesSettings(Settings):
    """``NEWSLETTER_BOUNCES_*``: where the receiver listens and what it accepts."""

    bounces_smtp_host: str = "127.0.0.1"
    bounces_smtp_port: int = 2525
    bounces_http_port: int = 9103
    # Plain local parts (no VERP token) accepted at the return-path domain: feedback loops and
    # role addresses that providers send reports to.
    bounces_accept_locals: str = "bounces,fbl,abuse,postmaster"
    bounces_sns_cert_hosts: str = DEFAULT_SNS_CERT_HOSTS
    bounces_sns_topic_arns: str = ""  # comma-separated allow-list; empty accepts any topic
    bounces_webhook_token: SecretStr = SecretStr("")  # ?token= for Postmark and SendGrid
    bounces_imap_url: str = ""  # imaps://user:password@host/INBOX ; empty disables polling
    bounces_imap_interval_s: float = 60.0
    bounces_archive_days: int = 30  # raw reports kept as evidence; 0 keeps none

    @property
    def accept_locals(self) -> frozenset[str]:
        return frozenset(p.strip().lower() for p in self.bounces_accept_locals.split(",") if p)

    @property
    def sns_topic_arns(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.bounces_sns_topic_arns.split(",") if p.strip())


def load_bounces_settings(**overrides: object) -> BouncesSettings:
    try:
        return BouncesSettings(**overrides)  # type: ignore[arg-type]
    except SettingsError:
        raise
    except ValueError as err:
        raise SettingsError(str(err)) from err
