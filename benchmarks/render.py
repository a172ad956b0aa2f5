"""``newsletter bench render``: render time of the three editions, and what a recipient costs
at send time (a fill of the edition rendered once) against a full Jinja2 + premailer render per
recipient, measured in the same run."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from services.renderer.catalogs import Templates
from services.renderer.fill import FillPlan, recipient_values
from services.renderer.issue import IssueFolder, parse_sources
from services.renderer.render import (
    EditionContext,
    _render_pair,
    edition_context,
    finish_html,
    render_edition,
)

GOAL_EDITIONS_S = 1.0
GOAL_RATIO = 1000.0
PAGES = "https://news.example.org"


def _values(n: int) -> dict[str, str]:
    return recipient_values(
        unsubscribe_url=f"https://news.example.org/unsubscribe?token=tok{n:08d}",
        preferences_url=f"https://news.example.org/preferences?token=tok{n:08d}",
        recipient=f"reader{n}@example.org",
    )


def run_bench(path: Path, *, recipients: int = 20000, full_renders: int = 30) -> dict[str, Any]:
    editions = parse_sources(IssueFolder.read(path).sources)
    templates = Templates()

    def contexts(lang: str) -> EditionContext:
        return EditionContext(segment=lang, view_url=f"{PAGES}/v/{lang}", archive_url=PAGES)

    started = time.perf_counter()
    rendered = {
        lang: render_edition(templates, ed, context=contexts(lang)) for lang, ed in editions.items()
    }
    cold = time.perf_counter() - started
    warm_runs = []
    for _ in range(5):
        started = time.perf_counter()
        for lang, ed in editions.items():
            render_edition(templates, ed, context=contexts(lang))
        warm_runs.append(time.perf_counter() - started)

    # Per recipient at send time: split once per edition, then one join per part and recipient.
    plans = {
        lang: (FillPlan(m.html, escape_html=True), FillPlan(m.text, escape_html=False))
        for lang, m in rendered.items()
    }
    languages = list(plans)
    values = [_values(n) for n in range(recipients)]
    started = time.perf_counter()
    for n, recipient in enumerate(values):
        html_plan, text_plan = plans[languages[n % len(languages)]]
        html_plan.fill(recipient)
        text_plan.fill(recipient)
    fill_s = (time.perf_counter() - started) / recipients

    # The alternative: a full Jinja2 + premailer render for every recipient.
    full_times = []
    for n in range(full_renders):
        lang = languages[n % len(languages)]
        recipient = _values(n)
        started = time.perf_counter()
        context = edition_context(templates, editions[lang], context=contexts(lang))
        context.update(
            unsubscribe_url=recipient["@@NL_UNSUBSCRIBE_URL@@"],
            preferences_url=recipient["@@NL_PREFERENCES_URL@@"],
            recipient=recipient["@@NL_RECIPIENT@@"],
        )
        html, _text = _render_pair(templates, lang, "issue", context)
        finish_html(html)
        full_times.append(time.perf_counter() - started)
    full_s = statistics.median(full_times)
    editions_warm = statistics.median(warm_runs)
    ratio = full_s / fill_s
    return {
        "editions": len(rendered),
        "three_editions_cold_s": round(cold, 4),
        "three_editions_warm_median_s": round(editions_warm, 4),
        "html_bytes": {lang: len(m.html.encode()) for lang, m in rendered.items()},
        "fill_per_recipient_us": round(fill_s * 1e6, 2),
        "full_render_per_recipient_ms": round(full_s * 1000, 3),
        "fill_vs_full_ratio": round(ratio, 1),
        "recipients_filled": recipients,
        "full_renders": full_renders,
        "goal_editions_under_1s": cold < GOAL_EDITIONS_S,
        "goal_fill_1000x_cheaper": ratio >= GOAL_RATIO,
    }
