"""Tunable defences of the signup form, read from ``NEWSLETTER_*`` variables by the CLI.

Kept apart from :class:`shared.settings.Settings` so the shared settings stay what every
process needs; the composition root loads both and passes them to ``create_app``.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class SignupPolicy(BaseSettings):
    """Defaults are the production values; tests and the load test override a few."""

    model_config = SettingsConfigDict(env_prefix="NEWSLETTER_", extra="ignore", frozen=True)

    # Time trap: a person needs a few seconds to type an address; the demo waits 3.5 s.
    signup_min_seconds: float = 3.0
    # A form older than this is stale: the person is asked to submit it again.
    signup_form_max_age_s: int = 24 * 3600
    # Per client IP, in this process (see shared/rate_limit.py for why memory is enough here).
    ip_limit: int = 30
    ip_window_s: float = 600.0
    # Per target address, across every replica (a conditional UPDATE in the database).
    confirmation_interval_s: int = 3600
    # Every signup answer takes at least this long, so timing tells nothing about the address.
    response_floor_s: float = 0.2
    consent_text_version: str = "2026-11-v1"
    # A welcome mail after confirming (NEWSLETTER_WELCOME_MAIL). The demo turns it off so that
    # its Maildir holds exactly the two mails of the path it shows: confirmation and issue.
    welcome_mail: bool = True
    # Concurrent signups of a process written in one transaction and one batch of publisher
    # confirms (services/subscription/group_commit.py; PostgreSQL only). Off: one by one.
    signup_group_commit: bool = True


def load_policy() -> SignupPolicy:
    return SignupPolicy()
