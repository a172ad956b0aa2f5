"""Server-side SVG charts of the issue report (no script, no CDN): grouped bars per article
with the three editions side by side, and a line per edition across the last issues.

Every text in a chart goes through :func:`xml.sax.saxutils.escape`; numbers are formatted
here, so the SVG is safe to place in a page as markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from markupsafe import Markup

from services.renderer.analytics_report import ArticleFigures, WeekPoint

COLOURS = {"en": "#1a5fb4", "be": "#9c1c1c", "ru": "#2a7a2a"}
# Lighter in dark mode, so bars and lines keep a 3:1 contrast with the page (WCAG 1.4.11).
DARK_COLOURS = {"en": "#78aeed", "be": "#f08a8a", "ru": "#7fcf7f"}
# Texts take the page's colour (currentColor), so they follow its light or dark scheme.
STYLE = (
    "<style>"
    + "".join(f".c-{e}{{fill:{c}}}.s-{e}{{stroke:{c}}}" for e, c in COLOURS.items())
    + "text{fill:currentColor}@media (prefers-color-scheme: dark){"
    + "".join(f".c-{e}{{fill:{c}}}.s-{e}{{stroke:{c}}}" for e, c in DARK_COLOURS.items())
    + "}</style>"
)


def _cls(kind: str, edition: str) -> str:
    return f"{kind}-{edition}" if edition in COLOURS else ""


WIDTH = 720
MIN_WIDTH = 540  # narrower, the 12 px labels shrink below 9 px: the chart scrolls instead


def _svg(height: int, label: str, body: str) -> Markup:
    return Markup(  # noqa: S704 - every text above is escaped, numbers are ours
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label={quoteattr(label)} '
        f'viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'style="min-width:{MIN_WIDTH}px;max-width:{WIDTH}px;display:block">'
        f"<title>{escape(label)}</title>{STYLE}{body}</svg>"
    )


def _legend(editions: Sequence[str], y: int) -> str:
    return "".join(
        f'<rect x="{10 + i * 90}" y="{y}" width="12" height="12" class="{_cls("c", e)}"/>'
        f'<text x="{28 + i * 90}" y="{y + 11}" font-size="12">{escape(e)}</text>'
        for i, e in enumerate(editions)
    )


def article_bars(
    articles: Sequence[ArticleFigures],
    editions: Sequence[str],
    *,
    label: str = "Readers' clicks per article and edition",
) -> Markup:
    """Readers' clicks per article, one bar per edition, side by side."""
    row, bar = 22 * max(1, len(editions)) + 18, 18
    height = 30 + row * max(1, len(articles))
    top = max([a.clicks.get(e, 0) for a in articles for e in editions] + [1])
    left, span = 200, WIDTH - 260
    parts = [_legend(editions, 4)]
    for i, article in enumerate(articles):
        y0 = 26 + i * row
        name = article.title or article.key
        parts.append(f'<text x="4" y="{y0 + 14}" font-size="12">{escape(name[:30])}</text>')
        for j, edition in enumerate(editions):
            value = article.clicks.get(edition, 0)
            w = round(span * value / top)
            y = y0 + j * 22
            share = article.share.get(edition)
            shown = f"{value}" + (f" ({share:.1%})" if share is not None else "")
            parts.append(
                f'<rect x="{left}" y="{y}" width="{max(w, 1)}" height="{bar}" '
                f'class="{_cls("c", edition)}"><title>{escape(edition)}: '
                f"{escape(shown)}</title></rect>"
                f'<text x="{left + max(w, 1) + 6}" y="{y + 13}" font-size="12">'
                f"{escape(edition)} {escape(shown)}</text>"
            )
    return _svg(height, label, "".join(parts))


def weekly_lines(
    points: Sequence[WeekPoint],
    editions: Sequence[str],
    *,
    label: str = "Readers' clicks per edition, issue by issue",
    empty: str = "No clicks yet",
) -> Markup:
    """Readers' clicks per edition across the last issues, week by week."""
    height, left, bottom, right = 240, 40, 200, WIDTH - 20
    if not points:
        return _svg(60, empty, f'<text x="4" y="30" font-size="13">{escape(empty)}</text>')
    top = max([p.clicks.get(e, 0) for p in points for e in editions] + [1])
    step = (right - left) / max(1, len(points) - 1)

    def xy(i: int, value: int) -> tuple[float, float]:
        return left + i * step, bottom - (bottom - 30) * value / top

    parts = [
        _legend(editions, 4),
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#888"/>',
        f'<text x="4" y="34" font-size="11">{top}</text>',
    ]
    for i, point in enumerate(points):
        x, _ = xy(i, 0)
        label = f"#{point.issue}" + (f" {point.week_of:%d.%m}" if point.week_of else "")
        parts.append(
            f'<text x="{x:.1f}" y="{bottom + 16}" font-size="11" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    for edition in editions:
        coords = [xy(i, p.clicks.get(edition, 0)) for i, p in enumerate(points)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        line, dot = _cls("s", edition), _cls("c", edition)
        parts.append(f'<polyline points="{path}" fill="none" class="{line}" stroke-width="2"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" class="{dot}"/>' for x, y in coords]
    return _svg(height, label, "".join(parts))
