"""Status-code reading for the bounce receiver: the shared rules' module, re-exported."""

from shared.reply_rules.status_codes import (
    find_basic,
    find_basic_failure,
    find_enhanced,
    find_failure,
    from_basic,
    more_specific,
    normalize,
    status_of_reply,
)

__all__ = [
    "find_basic",
    "find_basic_failure",
    "find_enhanced",
    "find_failure",
    "from_basic",
    "more_specific",
    "normalize",
    "status_of_reply",
]
