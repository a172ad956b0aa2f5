"""SpamAssassin's local tests (``spamassassin -L -t``) as a preflight score."""

from __future__ import annotations

import re
import shutil
import subprocess

from services.renderer.errors import RendererError

_SCORE = re.compile(rb"^X-Spam-Status: \w+, score=(-?\d+(?:\.\d+)?)", re.MULTILINE)
_RULES = re.compile(rb"^\s*(-?\d+\.\d+)\s+([A-Z0-9_]+)\s", re.MULTILINE)


class SpamCheckUnavailable(RendererError):
    """``spamassassin`` is not installed or did not answer."""


def spamassassin_path() -> str | None:
    return shutil.which("spamassassin")


def spam_score(message: bytes, *, timeout: float = 60.0) -> tuple[float, list[str]]:
    """The local-tests score of ``message`` and the rules that fired (with their points)."""
    binary = spamassassin_path()
    if binary is None:
        raise SpamCheckUnavailable(
            "spamassassin is not installed (Debian: apt-get install -y spamassassin)"
        )
    try:
        done = subprocess.run(  # noqa: S603 - fixed binary and arguments, message on stdin
            [binary, "-L", "-t"], input=message, capture_output=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SpamCheckUnavailable(f"spamassassin did not answer: {err}") from err
    match = _SCORE.search(done.stdout)
    if match is None:
        raise SpamCheckUnavailable(f"spamassassin printed no score (exit {done.returncode})")
    report = done.stdout.split(b"Content analysis details:", 1)[-1]
    rules = [
        f"{points.decode()} {name.decode()}"
        for points, name in _RULES.findall(report)
        if float(points) != 0.0
    ]
    return float(match[1]), rules
