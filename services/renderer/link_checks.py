"""Is a link absolute and well-formed? (Issue files, rendered editions, transactional mails.)"""

from __future__ import annotations

from urllib.parse import urlsplit


def _shown(url: str) -> str:
    """A URL as problems show it: without its query, which may hold a token."""
    base, sep, _query = url.partition("?")
    return base + ("?…" if sep else "")


def link_problem(url: str, *, image: bool = False) -> str | None:
    """Why ``url`` is not an absolute, well-formed link (None when it is)."""
    shown = _shown(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"link {shown!r} is not a well-formed URL"
    allowed = {"https", "http"} if image else {"https", "http", "mailto"}
    if any(c.isspace() for c in url) or not url:
        return f"link {shown!r} contains spaces or is empty"
    if parts.scheme not in allowed:
        if not parts.scheme:
            return f"link {shown!r} is not absolute (write the full https:// address)"
        return f"link {shown!r} uses the scheme {parts.scheme!r}, not one of {sorted(allowed)}"
    if parts.scheme != "mailto" and not parts.hostname:
        return f"link {shown!r} has no host"
    return None
