"""The one rule set that reads SMTP replies and bounce diagnostics (pure code, no I/O).

The dispatcher's synchronous outcomes and the bounce receiver's classifier both call
:func:`classify_reply` (or :func:`classify_smtp_reply`), so one reply gets one class
everywhere. ``evidence`` holds the wording families with their sources, ``status_codes``
the RFC 3463 / RFC 5321 code reading, ``decision`` the order in which evidence wins.
"""

from shared.reply_rules.decision import BounceClass, Verdict, classify_reply, classify_smtp_reply

__all__ = ["BounceClass", "Verdict", "classify_reply", "classify_smtp_reply"]
