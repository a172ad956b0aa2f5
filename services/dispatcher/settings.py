"""The dispatcher's own settings (``NEWSLETTER_DISPATCH_*``, ``NEWSLETTER_DKIM_*``).

They extend the suite's :class:`shared.settings.Settings`; read once by the composition root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

from services.dispatcher.broker_connection import broker_urls
from services.dispatcher.flow import MAX_PACE_S
from shared.clock import SYSTEM_CLOCK, Clock, OffsetFileClock
from shared.messaging.topology import RETRY_TIERS, RetryTier
from shared.settings import Settings, SettingsError

_TIERS = {tier.label: tier for tier in RETRY_TIERS}


class DispatcherSettings(Settings):
    """Every knob of the planner and the workers, with production defaults."""

    # The nodes of a RabbitMQ cluster, comma-separated AMQP URLs: the dispatcher connects to the
    # first that answers and, when its node dies, reconnects to the next (broker_connection.py).
    # Empty: NEWSLETTER_AMQP_URL alone.
    dispatch_amqp_urls: str = ""
    # Workers

    # Unacked issue jobs per process (the duplicate window's bound). A process's rate is at most
    # prefetch / time in flight (claim, SMTP, outcome commit and ack batches): about 0.15 s
    # on loopback, more to a distant MTA. 200 held one process to ~1,300 msg/s on loopback.
    dispatch_prefetch: int = 500
    dispatch_smtp_connections: int = 16  # persistent SMTP connections for issues
    transactional_smtp_connections: int = 2  # a separate pool: never behind a campaign
    dispatch_rate_limit: float = 0.0  # messages/s for the whole process; 0 = unlimited
    dispatch_domain_concurrency: int = 16  # SMTP transactions in flight per recipient domain
    # ... and the least that "slow down" replies cut it to (the breaker's half-open probe aside)
    dispatch_domain_concurrency_floor: int = 2
    dispatch_domain_rate: float = 0.0  # messages/s per recipient domain; 0 = unlimited
    dispatch_ledger_batch: int = 500  # delivery updates committed together
    # How long an outcome waits for its batch; the wait adds to each message's time in flight,
    # and prefetch / time in flight bounds the throughput.
    dispatch_ledger_interval_s: float = 0.03
    dispatch_ack_every: int = 100  # finished messages acked with one multiple-ack frame
    dispatch_ack_interval_s: float = 0.02  # ... or this often, whichever comes first
    dispatch_claim_interval_s: float = 0.02  # how long a claim waits for its batch
    # An outcome write that fails on a database hiccup is retried (never re-sent) with a backoff
    # from the first delay, doubling up to the second; intake pauses while the database is away.
    dispatch_db_retry_initial_s: float = 0.05
    dispatch_db_retry_max_s: float = 5.0
    # Retries
    dispatch_retry_tiers: str = "1m,10m,1h,6h"  # delay tiers used in order, the last repeats
    dispatch_retry_window_s: float = 3 * 24 * 3600.0
    dispatch_poison_limit: int = 3  # deliveries of a poison job before it is dead-lettered
    # Circuit breaker per domain: policy refusals within the window open it; throttling
    # replies ("slow down") shrink the domain's concurrency (see flow.py), and open it only
    # when they are at least dispatch_breaker_throttle_ratio of the domain's replies in the
    # window.
    dispatch_breaker_threshold: int = 20
    dispatch_breaker_window_s: float = 30.0
    dispatch_breaker_cooldown_s: float = 60.0
    dispatch_breaker_throttle_ratio: float = 0.5
    # Deadlines of the ledger (see reconciler.py). A claimed delivery is its worker's until
    # its lease ends: longer than the longest wait for a flow slot plus SMTP plus the outcome
    # write (refused when the prefetch, paced and rate-limited, could wait longer). A queued job
    # not consumed by its deadline (plus the grace) is published again.
    dispatch_lease_s: float = 900.0
    # ... unless its process stops beating: each process writes a heartbeat this often, and a
    # claimer not seen for dispatch_owner_stale_s (killed) loses its sending rows at once.
    dispatch_heartbeat_s: float = 5.0
    dispatch_owner_stale_s: float = 30.0
    dispatch_queued_deadline_s: float = 120.0
    dispatch_reconcile_s: float = 2.0  # how often the reconciler looks (due retries, lost jobs)
    dispatch_reconcile_grace_s: float = 10.0
    dispatch_reconcile_batch: int = 1000  # rows taken per statement
    # A send in planning with no new delivery row for this long (its PlanSend lost: purged,
    # dead-lettered) has its PlanSend published again by the reconciler.
    dispatch_planning_stale_s: float = 120.0
    # Planner
    dispatch_planner_batch: int = 1000
    # How often pending rows of running sends (a paused send's jobs, parked) are published again
    dispatch_outbox_sweep_s: float = 5.0
    # Which consumers this process runs (comma-separated): planner, deliveries, transactional
    dispatch_roles: str = "planner,deliveries,transactional"
    # DKIM (off unless a key is given); an RSA key signs rsa-sha256, an Ed25519 key ed25519-sha256
    dkim_private_key_path: Path | None = None
    dkim_selector: str = "newsletter"
    dkim_domain: str = ""
    # A second, Ed25519 key: an ed25519-sha256 signature (RFC 8463) alongside the first one
    dkim_ed25519_private_key_path: Path | None = None
    dkim_ed25519_selector: str = "newsletter-ed25519"
    # Who makes the signature: "fast" (cryptography, 0.45 ms) or "dkimpy" (about 9 ms)
    dkim_signer: Literal["fast", "dkimpy"] = "fast"
    # Tests of real processes only (NEWSLETTER_MODE=test): the process's clock is the machine's
    # moved by the seconds written in this file, so a test moves every dispatcher's time at once
    # (a scheduled start, a warm-up day). Refused in any other mode.
    dispatch_clock_file: Path | None = None

    @model_validator(mode="after")
    def _clock_file_in_tests_only(self) -> DispatcherSettings:
        if self.dispatch_clock_file is not None and self.mode != "test":
            raise SettingsError(
                "NEWSLETTER_DISPATCH_CLOCK_FILE moves the dispatcher's clock and is for tests "
                f"only (NEWSLETTER_MODE=test, not {self.mode}): unset it"
            )
        return self

    @model_validator(mode="after")
    def _slot_wait_within_the_lease(self) -> DispatcherSettings:
        # A job is claimed before it waits for its flow slot (worker.py), and a claim whose
        # lease ends is taken over (reconciler.py): the longest wait must end first. At worst
        # every prefetched job is for one domain, each spaced by the global rate, the domain's
        # rate and the slowest pace in turn.
        spacing = MAX_PACE_S + sum(
            1 / r for r in (self.dispatch_rate_limit, self.dispatch_domain_rate) if r > 0
        )
        wait_s = self.dispatch_prefetch * spacing
        if wait_s >= self.dispatch_lease_s:
            raise SettingsError(
                f"NEWSLETTER_DISPATCH_PREFETCH={self.dispatch_prefetch} jobs, each spaced by "
                f"up to {spacing:g} s (a {MAX_PACE_S:g} s pace and the rate limits), may wait "
                f"{wait_s:g} s for a slot, longer than their NEWSLETTER_DISPATCH_LEASE_S="
                f"{self.dispatch_lease_s:g} s: another process would send them again. Lower "
                "the prefetch or raise the lease"
            )
        return self

    @property
    def clock(self) -> Clock:
        """The process's clock: the machine's, or a test's moved one."""
        if self.dispatch_clock_file is None:
            return SYSTEM_CLOCK
        return OffsetFileClock(self.dispatch_clock_file)

    @field_validator("dispatch_retry_tiers")
    @classmethod
    def _known_tiers(cls, value: str) -> str:
        _parse_tiers(value)
        return value

    @property
    def retry_tiers(self) -> tuple[RetryTier, ...]:
        return _parse_tiers(self.dispatch_retry_tiers)

    @property
    def broker_urls(self) -> tuple[str, ...]:
        """The brokers to connect to, in order of preference."""
        return broker_urls(self.dispatch_amqp_urls) or (self.amqp_url,)

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.dispatch_roles.split(",") if r.strip())

    @property
    def dkim_key(self) -> bytes | None:
        if self.dkim_private_key_path is None:
            return None
        return self.dkim_private_key_path.read_bytes()

    @property
    def dkim_ed25519_key(self) -> bytes | None:
        if self.dkim_ed25519_private_key_path is None:
            return None
        return self.dkim_ed25519_private_key_path.read_bytes()


def _parse_tiers(value: str) -> tuple[RetryTier, ...]:
    labels = [label.strip() for label in value.split(",") if label.strip()]
    unknown = [label for label in labels if label not in _TIERS]
    if not labels or unknown:
        raise SettingsError(
            f"unknown retry tier(s) {unknown or value!r}: choose from {', '.join(_TIERS)}"
        )
    return tuple(_TIERS[label] for label in labels)


def load_dispatcher_settings(**overrides: object) -> DispatcherSettings:
    """Read the environment once; keyword overrides win (used by the CLI and tests)."""
    try:
        return DispatcherSettings(**overrides)  # type: ignore[arg-type]
    except SettingsError:
        raise
    except ValueError as err:
        raise SettingsError(str(err)) from err
