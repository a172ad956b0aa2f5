"""The dispatcher's Prometheus metrics, created on the registry the composition root passes."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass(frozen=True)
class DispatcherMetrics:
    deliveries: Counter
    smtp_seconds: Histogram
    planned: Counter
    confirms: Counter
    test_deliveries: Counter
    redriven: Counter
    planning_recoveries: Counter
    reconcile_passes: Counter

    def delivery(self, outcome: str, language: str, domain: str, *, test: bool) -> None:
        """Count one delivery outcome; a test send's ("[TEST]" to one address) apart."""
        if test:
            self.test_deliveries.labels(outcome, language).inc()
        else:
            self.deliveries.labels(outcome, language, domain).inc()

    @classmethod
    def create(cls, registry: CollectorRegistry) -> DispatcherMetrics:
        return cls(
            deliveries=Counter(
                "newsletter_deliveries_total",
                "Delivery attempts by outcome, edition and recipient domain (no test sends).",
                ["outcome", "language", "domain"],
                registry=registry,
            ),
            smtp_seconds=Histogram(
                "newsletter_smtp_transaction_seconds",
                "Duration of one SMTP transaction (MAIL, RCPT, DATA).",
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30),
                registry=registry,
            ),
            planned=Counter(
                "newsletter_planned_deliveries_total",
                "Delivery jobs planned and confirmed by the broker, by edition (no test sends).",
                ["language"],
                registry=registry,
            ),
            confirms=Counter(
                "newsletter_publish_confirms_total",
                "Publisher confirms received for delivery jobs.",
                registry=registry,
            ),
            test_deliveries=Counter(
                "newsletter_test_deliveries_total",
                "Outcomes of test sends ('[TEST]' to one address), by outcome and edition.",
                ["outcome", "language"],
                registry=registry,
            ),
            redriven=Counter(
                "newsletter_redriven_deliveries_total",
                "Deliveries the reconciler published again because their job was gone "
                "(lost_job) or their claimer's lease ended (lease_expired).",
                ["reason"],
                registry=registry,
            ),
            planning_recoveries=Counter(
                "newsletter_planning_recoveries_total",
                "Faults the planning of a send got over: relay_failed (the broker did not take "
                "a batch while planning; it waits in the outbox) and replanned (a send stuck in "
                "planning whose PlanSend the reconciler published again).",
                ["event"],
                registry=registry,
            ),
            reconcile_passes=Counter(
                "newsletter_reconcile_passes_total",
                "Passes of the reconciler over the ledger (due retries, lost jobs, leases).",
                registry=registry,
            ),
        )
