"""Prometheus metrics of the subscription service, created on the registry passed in.

``language`` is the subscriber's page/mail language (one count per person, not per edition).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter


@dataclass(frozen=True)
class SubscriptionMetrics:
    signups: Counter
    confirmations: Counter
    unsubscribes: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> SubscriptionMetrics:
        return cls(
            signups=Counter(
                "newsletter_signups_total",
                "Signups stored as pending (bots, suppressed and repeated signups excluded).",
                ["language"],
                registry=registry,
            ),
            confirmations=Counter(
                "newsletter_confirmations_total",
                "Subscriptions confirmed through the double opt-in link.",
                ["language"],
                registry=registry,
            ),
            unsubscribes=Counter(
                "newsletter_unsubscribes_total",
                "Unsubscribes, by method (page, one-click, preferences, admin).",
                ["language", "method"],
                registry=registry,
            ),
        )
