"""Per-recipient placeholders left in rendered editions and filled at send time.

The renderer renders each edition once with these literal markers where per-recipient values
go; the dispatcher replaces them in the message bytes built once per edition (a substitution
of microseconds, not a template render). Markers are ASCII, contain no characters that any
transfer encoding would alter, and are long and odd enough never to occur in real content.
"""

from __future__ import annotations

UNSUBSCRIBE_URL = "@@NL_UNSUBSCRIBE_URL@@"
PREFERENCES_URL = "@@NL_PREFERENCES_URL@@"
RECIPIENT = "@@NL_RECIPIENT@@"
VIEW_ONLINE_URL = "@@NL_VIEW_ONLINE_URL@@"
# After each tracked link when per-reader mode is on: "" for most readers, "/{ref}" (a signed
# per-delivery reference, shared/reader_refs.py) for those who consented.
READER_REF = "@@NL_READER_REF@@"

ALL = (UNSUBSCRIBE_URL, PREFERENCES_URL, RECIPIENT, VIEW_ONLINE_URL, READER_REF)
PREFIX = "@@NL_"
