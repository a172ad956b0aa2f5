"""Settings of the bounce receiver, on top of the suite's common ``NEWSLETTER_*`` settings.

Every webhook provider that is enabled (``NEWSLETTER_BOUNCES_WEBHOOKS``) needs its credential;
in production the receiver refuses to start without it and says which variable to set.
"""

from __future__ import annotations

from pydantic import SecretStr, model_validator

from services.bounces.auth import load_public_key
from shared.settings import Settings, SettingsError

DEFAULT_SNS_CERT_HOSTS = r"^sns\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?$"
PROVIDERS = ("ses", "postmark", "sendgrid")


class BouncesSettings(Settings):
    """``NEWSLETTER_BOUNCES_*``: where the receiver listens and what it accepts."""

    bounces_smtp_host: str = "127.0.0.1"
    bounces_smtp_port: int = 2525
    bounces_http_port: int = 9103
    # Plain local parts (no VERP token) accepted at the return-path domain: feedback loops and
    # role addresses that providers send reports to. What arrives there acts on a reader only
    # when it quotes a signed Message-ID or VERP address of ours; the rest is kept as unmatched.
    bounces_accept_locals: str = "bounces,fbl,abuse,postmaster"
    # Webhook providers served over HTTP (comma-separated, or "none").
    bounces_webhooks: str = ",".join(PROVIDERS)
    bounces_sns_cert_hosts: str = DEFAULT_SNS_CERT_HOSTS
    # Comma-separated allow-list of SNS topics. Any AWS account can get SNS to sign a message,
    # so the topic is SES's credential: required in production.
    bounces_sns_topic_arns: str = ""
    # Postmark: "user:password" of the basic-auth credentials put in the webhook URL
    # (https://user:password@host/webhooks/postmark), and/or a token sent as ?token=.
    bounces_postmark_basic_auth: SecretStr = SecretStr("")
    bounces_postmark_token: SecretStr = SecretStr("")
    # SendGrid Signed Event Webhook: the verification key (base64 DER or PEM, ECDSA P-256).
    bounces_sendgrid_public_key: str = ""
    bounces_sendgrid_max_age_s: int = 600  # older signed timestamps are replays: refused
    bounces_webhook_max_bytes: int = 1024 * 1024
    # Reports one source may make per minute: per client IP and per provider (then 429).
    bounces_rate_per_ip: int = 600
    bounces_rate_per_provider: int = 6000
    bounces_imap_url: str = ""  # imaps://user:password@host/INBOX ; empty disables polling
    bounces_imap_interval_s: float = 60.0
    bounces_archive_days: int = 30  # raw reports kept as evidence; 0 keeps none

    @property
    def accept_locals(self) -> frozenset[str]:
        return frozenset(p.strip().lower() for p in self.bounces_accept_locals.split(",") if p)

    @property
    def sns_topic_arns(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.bounces_sns_topic_arns.split(",") if p.strip())

    @property
    def webhooks(self) -> frozenset[str]:
        names = {p.strip().lower() for p in self.bounces_webhooks.split(",") if p.strip()}
        return frozenset(names - {"none"})

    def missing_credentials(self) -> list[str]:
        """For each enabled provider without a credential: what to set."""
        missing = []
        if "ses" in self.webhooks and not self.sns_topic_arns:
            missing.append("ses: set NEWSLETTER_BOUNCES_SNS_TOPIC_ARNS to your SES topic ARNs")
        postmark = self.bounces_postmark_basic_auth.get_secret_value()
        if "postmark" in self.webhooks and not (
            ":" in postmark or self.bounces_postmark_token.get_secret_value()
        ):
            missing.append(
                "postmark: set NEWSLETTER_BOUNCES_POSTMARK_BASIC_AUTH (user:password) "
                "or NEWSLETTER_BOUNCES_POSTMARK_TOKEN"
            )
        if "sendgrid" in self.webhooks and not self.bounces_sendgrid_public_key.strip():
            missing.append(
                "sendgrid: set NEWSLETTER_BOUNCES_SENDGRID_PUBLIC_KEY to the Signed Event "
                "Webhook verification key"
            )
        return missing

    @model_validator(mode="after")
    def _check_webhooks(self) -> BouncesSettings:
        unknown = self.webhooks - set(PROVIDERS)
        if unknown:
            raise SettingsError(
                f"NEWSLETTER_BOUNCES_WEBHOOKS names unknown providers {sorted(unknown)}: "
                f"use some of {', '.join(PROVIDERS)}, or none"
            )
        if self.bounces_sendgrid_public_key.strip():
            try:
                load_public_key(self.bounces_sendgrid_public_key)
            except ValueError as err:
                raise SettingsError(f"NEWSLETTER_BOUNCES_SENDGRID_PUBLIC_KEY: {err}") from err
        missing = self.missing_credentials()
        if self.mode == "production" and missing:
            raise SettingsError(
                "the bounce receiver's webhooks need credentials in production: "
                + "; ".join(missing)
                + " (or leave the provider out of NEWSLETTER_BOUNCES_WEBHOOKS)"
            )
        return self


def load_bounces_settings(**overrides: object) -> BouncesSettings:
    try:
        return BouncesSettings(**overrides)  # type: ignore[arg-type]
    except SettingsError:
        raise
    except ValueError as err:  # pydantic wraps validator errors: keep the first message
        errors = getattr(err, "errors", None)
        found = errors() if callable(errors) else []
        message = str(found[0].get("msg", err)) if found else str(err)
        raise SettingsError(message.removeprefix("Value error, ")) from err
