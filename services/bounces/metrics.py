"""Prometheus metrics of the bounce intake (names agreed across the suite)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter


class BounceMetrics:
    """Bounces and complaints read, reports kept unmatched or unreadable, webhooks refused."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.bounces = Counter(
            "newsletter_bounces_total",
            "Bounces read by the intake, by class, language segment and receiving domain.",
            ["class", "language", "domain"],
            registry=registry,
        )
        self.complaints = Counter(
            "newsletter_complaints_total",
            "Complaints (feedback reports) by language segment and receiving domain.",
            ["language", "domain"],
            registry=registry,
        )
        self.kept = Counter(
            "newsletter_bounce_reports_kept_total",
            "Reports that changed nobody, kept for operators: unmatched (nothing proves the "
            "mail was ours) or unreadable, by intake source.",
            ["status", "source"],
            registry=registry,
        )
        self.refused = Counter(
            "newsletter_bounce_webhooks_refused_total",
            "Webhook requests refused: unauthenticated, rate_limited or bad_request.",
            ["provider", "reason"],
            registry=registry,
        )

    def observe(self, *, bounce_class: str, language: str | None, domain: str) -> None:
        lang = language or "unknown"
        if bounce_class == "complaint":
            self.complaints.labels(language=lang, domain=domain).inc()
        else:
            self.bounces.labels(**{"class": bounce_class}, language=lang, domain=domain).inc()
