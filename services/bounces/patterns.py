"""Wording of real bounces, grouped by what it means.

The patterns are deliberately generic (the phrases MTAs and providers use for a condition),
not tied to a sample: the classifier is measured on bounces it has never seen. Each group is
one compiled, case-insensitive regular expression; ``classes.py`` decides which group wins.
"""

from __future__ import annotations

import re


def _any(*phrases: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in phrases), re.IGNORECASE)


# The mailbox exists but cannot take mail right now: soft, whatever the code says.
MAILBOX_FULL = _any(
    r"mail\s*(?:box|folder)\s+(?:is\s+)?full",
    r"mailbox\s+(?:size\s+)?(?:limit\s+)?exceeded",
    r"over\s*quota",
    r"quota\s+(?:exceeded|full|exceed)",
    r"exceed(?:s|ed)?\s+(?:the\s+)?(?:storage|quota|mailbox|disk)",
    r"insufficient\s+(?:disk\s+)?(?:space|storage)",
    r"(?:disk|storage)\s+(?:quota|space)\s+(?:exceeded|full)",
    r"user\s+(?:is\s+)?over\s+(?:the\s+)?(?:quota|limit)",
    r"out\s+of\s+storage",
    r"(?:disk|mailbox|storage|mail\s*box)\s+(?:space\s+)?quota",
    r"exceed\w*\s+(?:their|his|her|the|its)?\s*quota",
    r"mail\s*box\s+space\s+(?:not\s+enough|exceeded)",
    r"too\s+many\s+messages\s+in\s+(?:the\s+)?mailbox",
    r"inbox\s+is\s+full",
    r"ящик\s+переполнен|переполнен\w*\s+(?:почтовый\s+)?ящик",
    r"превышен\w*\s+(?:\S+\s+)?(?:квот|лимит|размер)",
    r"postfach\s+(?:ist\s+)?voll",
    r"bo[iî]te\s+(?:aux\s+lettres\s+)?(?:est\s+)?pleine|buz[oó]n\s+(?:est[aá]\s+)?lleno|casella\s+piena",
)

# The address does not exist or no longer takes mail: hard.
NO_SUCH_USER = _any(
    r"user(?:name)?\s+(?:is\s+)?unknown",
    r"unknown\s+(?:user|recipient|local[\s-]part|mailbox|address|alias)",
    r"no\s+such\s+(?:user|recipient|mailbox|address|account|local\s+user|person)",
    r"(?:user|recipient|mailbox|address|account|addressee)(?:\s+\S+)?\s+(?:does\s+not|doesn't|doesnt)\s+exist",
    r"(?:does\s+not|doesn't)\s+have\s+an?\s+\S+\s+account",
    r"(?:user|recipient|mailbox|account|address)\s+(?:was\s+)?not\s+(?:found|known|recognized|recognised|valid)",
    r"recipient\s+name\s+is\s+not\s+recognized",
    r"invalid\s+(?:recipient|mailbox|address|user|e-?mail\s+address)",
    r"(?:recipient|address)\s+(?:address\s+)?(?:is\s+)?invalid",
    r"mailbox\s+(?:is\s+)?(?:unavailable|not\s+available|disabled|inactive|not\s+found|does\s+not\s+exist)",
    r"(?:account|mailbox|address|user)\s+(?:has\s+been\s+|is\s+)?(?:disabled|deactivated|suspended|closed|expired|terminated|deleted|removed|inactive|locked)",
    r"recipnotfound|recipientnotfound|resolver\.adr",
    r"addressee\s+unknown",
    r"not\s+listed\s+in\s+(?:the\s+)?(?:domino\s+)?(?:public\s+)?(?:name\s+and\s+address\s+book|directory)",
    r"unrouteable\s+address",
    r"no\s+mailbox\s+(?:here|by\s+that\s+name|found)",
    r"no\s+longer\s+(?:valid|available|active|in\s+use|exists?|with|employed|at)",
    r"this\s+(?:account|address)\s+is\s+no\s+longer",
    r"host\s+(?:or\s+domain\s+name\s+)?(?:not\s+found|unknown)",
    r"domain\s+(?:name\s+)?(?:not\s+found|does\s+not\s+exist|unknown)",
    r"unknown\s+(?:host|domain)",
    r"name\s+or\s+service\s+not\s+known",
    r"no\s+(?:mx|mail\s+exchanger|valid\s+mx)",
    r"bad\s+destination\s+(?:mailbox|system)",
    r"(?:recipient|rcpt)\s+(?:address\s+)?rejected:\s*(?:user|mailbox|address|account)",
    r"delivery\s+to\s+the\s+following\s+recipients?\s+failed\s+permanently",
    r"illegal\s+(?:user|address)",
    r"i\s+have\s+no\s+(?:user|account)",
    r"not\s+a\s+(?:valid|known)\s+(?:user|mailbox|recipient)",
    r"there\s+is\s+no\s+(?:one|user|such)",
    r"address\s+(?:lookup\s+)?failed",
    r"(?:не\s+существует|нет\s+такого\s+пользователя|пользователь\s+не\s+найден)",
    r"(?:адрес|адресат|получатель|ящик)\w*\s+не\s+(?:найден|существует)|несуществующ",
    r"(?:учетная|учётная)\s+запись\s+(?:\S+\s+)?(?:заблокирована|отключена|удалена)",
    r"(?:unbekannt|existiert\s+nicht|inconnu|n'existe\s+pas|sconosciuto|inexistente|no\s+existe)",
)

# The receiver refused us, not the subscriber: policy.
POLICY = _any(
    r"\bspam|спам",
    r"unsolicited",
    r"block(?:ed|list|ing)\b",
    r"block\s+list|on\s+our\s+(?:block|deny|black)",
    r"black\s*list",
    r"deny\s*list|denylist",
    r"\blisted\s+(?:in|on|at|by)\b",
    r"\b(?:rbl|dnsbl|spamhaus|spamcop|barracuda|sorbs|proofpoint|mimecast)\b",
    r"reputation",
    r"\bpolicy\b",
    r"\b(?:spf|dkim|dmarc)\b",
    r"unauthenticated",
    r"not\s+authenticated",
    r"authentication\s+(?:required|failed|check)",
    r"content\s+(?:rejected|refused|filter)",
    r"message\s+(?:content\s+)?(?:rejected|refused)\s+(?:due\s+to|as|because)",
    r"virus\s+(?:detected|found)|malware|phishing|infected",
    r"rejected\s+(?:by|due\s+to)\s+(?:the\s+)?(?:recipient'?s?\s+)?(?:anti|filter|security)",
    r"banned",
    r"access\s+denied.*(?:ip|sender|banned|traffic)",
    r"traffic\s+not\s+accepted",
    r"(?:too\s+many|excessive|unusual)\s+(?:connections|messages|recipients|volume|rate)",
    r"rate\s+limit",
    r"user\s+complaints",
    r"\btss0\d\b",
    r"sender\s+(?:address\s+)?(?:rejected|denied|blocked|not\s+allowed)",
    r"(?:poor|low|bad)\s+(?:ip\s+)?reputation",
    r"reverse\s+(?:dns|lookup)|\bptr\b|rdns",
    r"not\s+permitted\s+to\s+(?:relay|send)",
    r"prohibited|forbidden",
    r"bulk\s+mail",
    r"(?:not\s+accepting|refus\w*\s+to\s+accept|does\s+not\s+accept)\s+(?:e-?mail|mail|messages)\s+from",
)

# The receiving system is not the one for this domain any more: treated as a bad address.
RELAY_DENIED = _any(
    r"relay(?:ing)?\s+(?:access\s+)?(?:denied|not\s+(?:permitted|allowed)|prohibited)",
    r"unable\s+to\s+relay|list\s+of\s+allowed\s+rcpthosts",
    r"we\s+do\s+not\s+relay",
    r"not\s+(?:a\s+)?(?:local|our)\s+(?:domain|host)",
)

# Temporary conditions: soft.
TEMPORARY = _any(
    r"try\s+(?:again\s+)?later",
    r"temporar(?:y|ily)",
    r"connection\s+(?:timed\s+out|refused|reset|lost)",
    r"timed?\s*out",
    r"(?:could\s+not|couldn't|unable\s+to|wasn't\s+able\s+to)\s+(?:establish|connect|open)",
    r"too\s+long\s+in\s+(?:the\s+)?queue|been\s+in\s+the\s+queue\s+too\s+long",
    r"(?:retry|delivery)\s+(?:time|timeout|period)\s+(?:exceeded|expired)",
    r"message\s+expired|expired\s+after",
    r"could\s+not\s+be\s+delivered\s+(?:for|within)\s+\d+",
    r"(?:gave|giving)\s+up\s+after",
    r"delivery\s+failed\s+\d+\s+attempts",
    r"host\s+(?:is\s+)?(?:unreachable|down)",
    r"network\s+(?:is\s+)?unreachable",
    r"no\s+route\s+to\s+host",
    r"service\s+(?:temporarily\s+)?(?:not\s+)?(?:available|unavailable)",
    r"greylist|graylist",
    r"resources?\s+(?:temporarily\s+)?unavailable",
    r"message\s+(?:too\s+large|size\s+exceeds|is\s+too\s+big)",
    r"exceed\w*\s+(?:the\s+)?maximum\s+(?:\w+\s+){0,2}(?:message\s+)?size",
    r"(?:maximum|max)\s+delivery\s+attempts",
    r"(?:aborted|abandoned|cancell?ed)\s+after\s+\d",
    r"exceeded\s+(?:the\s+)?(?:maximum|max)\s+(?:number\s+of\s+)?(?:delivery\s+)?(?:attempts|retries)",
    r"try\s+to\s+resend|resend\s+(?:this|the|your)\s+message\s+later",
    r"loop(?:s|ing)?\s+(?:back|detected)|mail\s+loop|routing\s+loop|too\s+many\s+hops",
    r"deferred",
    r"retry\s+time\s+not\s+reached|long\s+failure\s+period",
)

# A warning that the mail is still queued: delayed.
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

# The MTA says it stopped trying: a failure, not a warning.
GIVEN_UP = _any(
    r"i'?ve\s+given\s+up|i\s+have\s+given\s+up|gave\s+up|giving\s+up",
    r"(?:not\s+going\s+to|will\s+not|won't)\s+(?:try|retry|attempt)",
    r"permanent(?:ly)?\s+(?:error|failure|fatal|failed)",
    r"delivery\s+(?:to\s+the\s+following\s+\S+\s+)?(?:has\s+)?failed",
)

# Permanent failure wording with no better clue.
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
