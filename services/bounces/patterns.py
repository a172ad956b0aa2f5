"""Wording that tells the *shape* of a report: bounce or not, warning or failure, auto-reply.

What a reply says about its cause (address missing, block list, mailbox full ...) is not
here: it lives once in :mod:`shared.reply_rules.evidence`, shared with the dispatcher. The
phrases below are the general wording of MTAs' report templates (RFC 3464 3.1 human-readable
part; Postfix bounce(8) templates, Exim's "Mail delivery failed", qmail-send's "failure
notice", Sendmail's "Returned mail", Exchange's "Undeliverable:"), not a sample's exact text.
"""

from __future__ import annotations

import re


def _any(*phrases: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in phrases), re.IGNORECASE)


# A warning that the mail is still queued: delayed. RFC 3464 2.3.3 "delayed"; the warning
# templates of Postfix ("THIS IS A WARNING ONLY ... will be retried until"), Exim
# ("has not yet been delivered ... Delivery attempts will continue"), Sendmail ("Warning:
# could not send message for past 4 hours ... Will keep trying"), Exchange ("Delivery Status
# Notification (Delay) ... will continue to try"), qmail-send's no-warning behaviour aside.
DELAYED = _any(
    r"not\s+yet\s+been\s+delivered|has\s+not\s+been\s+delivered\s+yet",
    r"(?:will|shall)\s+(?:continue\s+to\s+)?(?:retry|try\s+again|attempt\s+(?:delivery|to\s+deliver|again))",
    r"(?:delivery\s+)?attempts\s+will\s+continue",
    r"will\s+be\s+retried",
    r"continue\s+(?:trying|to\s+(?:try|attempt))",
    r"still\s+(?:trying|queued|awaiting|being\s+retried)",
    r"delivery\s+(?:has\s+been\s+|is\s+)?delayed",
    r"message\s+(?:has\s+been\s+|is\s+)?delayed",
    r"\bdelayed\s+\d+\s+hours?",
    r"warning:\s+(?:could\s+not\s+send|message|delivery)",
    r"this\s+is\s+(?:just\s+)?a\s+warning",
    r"no\s+action\s+is\s+required",
    r"(?:you\s+do\s+not|don't)\s+need\s+to\s+(?:take\s+any\s+action|resend)",
    r"will\s+be\s+returned\s+(?:to\s+you\s+)?(?:if|when|after)",
)

# The MTA says it stopped trying: a failure, not a warning (qmail "I've given up", Gmail
# "failed permanently", Exim "This is a permanent error").
GIVEN_UP = _any(
    r"i'?ve\s+given\s+up|i\s+have\s+given\s+up|gave\s+up|giving\s+up",
    r"(?:not\s+going\s+to|will\s+not|won't)\s+(?:try|retry|attempt)",
    r"permanent(?:ly)?\s+(?:error|failure|fatal|failed)",
    r"delivery\s+(?:to\s+the\s+following\s+\S+\s+)?(?:has\s+)?failed",
)

# Permanent failure wording with no cause: it makes a text a bounce, never a class (RFC 3463
# X.0.0: "the only information is that the message could not be delivered").
PERMANENT = _any(
    r"permanent(?:ly)?\s+(?:error|failure|fatal|failed)",
    r"fatal\s+errors?",
    r"i'?ve\s+given\s+up|i\s+have\s+given\s+up",
    r"(?:could|can)\s*(?:not|n't)\s+be\s+delivered",
    r"undeliverable",
    r"delivery\s+(?:has\s+)?failed",
    r"failed\s+(?:recipient|address)",
    r"unable\s+to\s+deliver",
    r"returned\s+mail",
)

# The subject of an auto-reply (RFC 3834 senders do not always set Auto-Submitted).
AUTO_REPLY_SUBJECT = _any(
    r"^\s*(?:auto(?:matic)?[\s_-]*(?:reply|response|answer|antwort)|autoreply|autoresponse)\b",
    r"^\s*auto:",
    r"out\s+of\s+(?:the\s+)?office",
    r"\bon\s+(?:vacation|holiday|leave)\b",
    r"\bvacation\b",
    r"abwesenheits?notiz|\babwesend\b",
    r"r[ée]ponse\s+automatique|absence",
    r"respuesta\s+autom[áa]tica|fuera\s+de\s+la\s+oficina",
    r"risposta\s+automatica|fuori\s+ufficio",
    r"automatisch\s+antwoord|afwezig",
    r"автоответ|автоматический\s+ответ|аўтаадказ|в\s+отпуске",
    r"away\s+from\s+(?:my\s+)?(?:e-?mail|mail|the\s+office|office|my\s+desk)",
)

# Subject prefixes that only auto-replies use ("Automatic reply: <our subject>").
AUTO_REPLY_PREFIX = re.compile(
    r"^\s*(?:automatic\s+reply|auto(?:matic)?[\s_-]*(?:response|antwort)|autoreply|auto:|"
    r"out\s+of\s+(?:the\s+)?office(?:\s+reply)?:|abwesenheitsnotiz:|r[ée]ponse\s+automatique|"
    r"respuesta\s+autom[áa]tica|автоответ|автоматический\s+ответ)",
    re.IGNORECASE,
)

# The first lines of a vacation message sent without Auto-Submitted or a telling subject.
AUTO_REPLY_BODY = _any(
    r"\b(?:i\s+am|i'm)\s+(?:currently\s+)?(?:out\s+of\s+(?:the\s+)?office|on\s+(?:vacation|holiday|leave|annual\s+leave)|away\s+(?:from|until))",
    r"\bthis\s+is\s+an\s+auto(?:matic|mated)?[\s-]*(?:reply|response)",
    r"\bwill\s+(?:be\s+)?(?:back|return)\s+(?:on|in\s+the\s+office\s+on)\b.*\blimited\s+access",
    r"я\s+(?:в\s+отпуске|нахожусь\s+в\s+отпуске|отсутствую)",
)

BOUNCE_SUBJECT = _any(
    r"undeliver",
    r"undelivered",
    r"delivery\s+(?:status\s+)?(?:notification|failure|failed|problem|report)",
    r"returned\s+(?:mail|to\s+sender)",
    r"failure\s+notice",
    r"mail\s+delivery\s+(?:failed|system|subsystem)",
    r"non[\s-]?remis|unzustellbar|nicht\s+zustellbar|non\s+recapitabile",
    r"недоставлен|не\s+доставлен",
    r"could\s+not\s+send",
    r"delayed\s+mail|message\s+delayed|warning:",
    r"nondeliverable|non-delivery",
)

BOUNCE_SENDER = _any(
    r"mailer[-_]?daemon",
    r"postmaster",
    r"mail\s*delivery\s*(?:system|subsystem)",
    r"\bmmdf\b|\bsmtp\s*gateway\b",
)

# Lines that start the copy of the original message in a plain-text bounce.
ORIGINAL_MESSAGE_MARKER = re.compile(
    r"^\s*(?:-{2,}\s*)?(?:"
    r"below\s+this\s+line\s+is\s+a\s+copy"
    r"|(?:this\s+is\s+a\s+)?copy\s+of\s+(?:the\s+|your\s+)?(?:original\s+)?message"
    r"|original\s+message\s+(?:headers?|details|text)"
    r"|original\s+message\s+(?:\w+\s+){0,4}(?:follows|below|attached)"
    # A line that is just "Original message" (not "The original message was received at").
    r"|(?:the\s+)?original\s+message\s*[:\-=*]*\s*$"
    r"|(?:start\s+of\s+)?returned\s+(?:message|mail)"
    r"|header\s+of\s+the\s+(?:source|original)\s+(?:mail|message)"
    r"|(?:a\s+)?summary\s+of\s+the\s+undelivered\s+message"
    r"|unsent\s+message\s+below"
    r"|(?:unsent|undelivered)\s+message\s+follows"
    r"|the\s+headers?\s+of\s+(?:the|your)\s+(?:original\s+)?message"
    r"|message\s+(?:text\s+)?follows"
    r"|original\s+text\s+follows"
    r")",
    re.IGNORECASE,
)

# The opening lines of the non-DSN bounce templates of widely deployed MTAs: qmail-send
# ("Hi. This is the qmail-send program at"), Exim ("This message was created automatically
# by mail delivery software"), Postfix bounce(8) ("This is the mail system at host"),
# Sendmail ("The original message was received at"), Exchange/Outlook NDRs ("Delivery has
# failed to these recipients or groups", "Your message to ... couldn't be delivered"),
# Lotus Notes/Domino ("was not delivered to:"), GroupWise ("The message that you sent was
# undeliverable"), Gmail ("Delivery to the following recipient failed permanently", "Your
# message wasn't delivered to"), Courier ("Your message was not delivered to").
MTA_TEMPLATE = _any(
    r"this\s+is\s+the\s+qmail-send\s+program",
    r"created\s+automatically\s+by\s+mail\s+delivery\s+software",
    r"this\s+is\s+the\s+mail\s+(?:system|delivery\s+agent)\s+at\s+host",
    r"the\s+original\s+message\s+was\s+received\s+at",
    r"delivery\s+has\s+failed\s+to\s+these\s+recipients",
    r"(?:your\s+)?message\s+(?:to\s+\S+\s+)?(?:couldn'?t|could\s+not|wasn'?t|was\s+not)\s+be?\s*(?:delivered|sent)",
    r"was\s+not\s+delivered\s+to:?",
    r"message\s+that\s+you\s+sent\s+was\s+undeliverable",
    r"delivery\s+to\s+the\s+following\s+recipients?\s+failed",
    r"following\s+addresses\s+had\s+permanent\s+fatal\s+errors",
    r"(?:i'?m|i\s+am)\s+(?:sorry|afraid)\s+(?:to\s+have\s+to\s+inform\s+you\s+)?(?:that\s+)?(?:i\s+wasn'?t\s+able|your\s+message\s+could\s+not)",
)

# Feedback loops that send the reported message without an RFC 5965 part: AOL's
# "Email Feedback Report for IP ...", Microsoft JMRP's "complaint about message from ...",
# Yahoo's and others' "abuse report" (the RFC 5965 example's human text says "This is an
# email abuse report").
FEEDBACK_LOOP_SUBJECT = _any(
    r"\bfeedback\s+report\b",
    r"\babuse\s+report\b",
    r"complaint\s+about\s+message",
    r"\bspam\s+(?:report|complaint)\b",
    r"\bfbl\b",
    r"client\s+tos\s+notification",  # AOL's feedback loop before it adopted ARF
)
FEEDBACK_LOOP_BODY = _any(
    r"this\s+is\s+an?\s+(?:e-?mail\s+)?abuse\s+report",
    r"feedback[\s-]loop",
    r"(?:marked|reported)\s+(?:this\s+message\s+|it\s+)?as\s+(?:spam|junk)",
)
