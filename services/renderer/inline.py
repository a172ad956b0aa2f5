"""CSS inlining with premailer: network off, media queries kept, classes kept for them."""

from __future__ import annotations

import asyncio
import logging

from premailer import Premailer

from services.renderer.errors import RenderFailed


def inline_css(html: str) -> str:
    """Inline the ``<style>`` rules; ``@media`` blocks (small screens, dark mode) stay."""
    try:
        return str(
            Premailer(
                html,
                allow_network=False,
                disable_validation=True,
                remove_classes=False,
                keep_style_tags=False,
                strip_important=False,  # the @media rules need !important to beat inline styles
                cssutils_logging_level=logging.CRITICAL,
            ).transform()
        )
    except Exception as err:  # premailer/cssutils/lxml raise many unrelated types
        raise RenderFailed(f"CSS inlining failed: {err}") from err


async def inline_css_async(html: str) -> str:
    """:func:`inline_css` off the event loop (it is CPU-bound: about 7 ms an edition)."""
    return await asyncio.to_thread(inline_css, html)
