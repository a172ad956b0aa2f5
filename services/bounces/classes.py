"""One bounce class from an action, a status code and the words around them.

The rules live once, in :mod:`shared.reply_rules` (the dispatcher's synchronous outcomes
call the same code); this module is the receiver's name for them. Classes: ``hard``,
``soft``, ``policy``, ``delayed``, ``unknown`` (see :mod:`shared.reply_rules.decision`);
``complaint`` and ``auto-reply`` come from the report's shape, not from a reply.
"""

from __future__ import annotations

from shared.reply_rules import Verdict, classify_reply

__all__ = ["Verdict", "classify_failure"]


def classify_failure(*, action: str, status: str, text: str) -> Verdict:
    """Class of one recipient's failure; ``text`` is its diagnostic and nearby words."""
    return classify_reply(text=text, status=status, action=action)
