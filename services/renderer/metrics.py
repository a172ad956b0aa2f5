"""The renderer's Prometheus metrics, created on the registry the composition root passes."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Histogram


class RendererMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.render_seconds = Histogram(
            "newsletter_render_seconds",
            "Time to render one mail or edition (Jinja2, premailer, line wrapping).",
            ["kind", "language"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
