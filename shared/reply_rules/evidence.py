"""What the words of an SMTP reply or a bounce say, grouped by the cause they prove.

Each family is one case-insensitive regular expression; each phrase names where that wording
is documented (an RFC, a provider's published error list or a widely deployed MTA's message
catalogue). The phrases are the general wording of a cause, never a sample's exact text.
:mod:`shared.reply_rules.decision` decides which family wins.

Sender-side wording is read on the text with URLs, e-mail addresses and host names removed
(:func:`scrubbed`): a receiving host called ``mx.spamfilter.example`` is not a spam verdict.
"""

from __future__ import annotations

import re


def _any(*phrases: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in phrases), re.IGNORECASE)


# --- The address or its domain does not exist (hard, when nothing sender-side is said) ------
ADDRESS_MISSING = _any(
    # RFC 3463 X.1.1 / X.1.2 / X.1.3 subject texts, quoted by MTAs in DSNs.
    r"bad\s+destination\s+(?:mailbox|system)\s+address",
    r"destination\s+mailbox\s+address\s+syntax",
    # Postfix local(8)/smtpd(8): "User unknown in local recipient table", "... virtual
    # mailbox table", "unknown user: ..."; Sendmail "... User unknown"; Exchange 2003
    # "Unknown address error"; Courier "Unknown user"; Yandex's published bounce list
    # ("User unknown", "User not found").
    r"(?:user(?:name)?|recipient|addressee|address|mailbox)\s+(?:is\s+)?unknown",
    r"unknown\s+(?:user|recipient|local[\s-]?part|mailbox|address\b|alias|addressee)",
    # RFC 5321 4.2.2 example "mailbox not found"; qmail "Sorry, no mailbox here by that
    # name. (#5.1.1)"; Yandex "No such user!"; Yahoo "No such user here".
    r"no\s+such\s+(?:user|recipient|mailbox|address|account|local\s+user|person|e-?mail)",
    r"no\s+mailbox\s+(?:here|by\s+that\s+name|found)",
    r"mailbox\s+(?:was\s+|is\s+)?not\s+found",
    # Gmail SMTP error reference 550 5.1.1 "The email account that you tried to reach does
    # not exist"; iCloud "user does not exist"; Mail.ru "user not found".
    r"(?:user|recipient|mailbox|address|account|addressee|e-?mail\s+account)(?:\s+\S+)?"
    r"\s+(?:does\s+not|doesn'?t|did\s+not)\s+exist",
    r"(?:user|recipient|account|address)\s+(?:was\s+)?not\s+(?:found|known|recognized|recognised)",
    # Yahoo's published error "554 delivery error: dd This user doesn't have a yahoo.com
    # account".
    r"(?:does\s+not|doesn'?t)\s+have\s+an?\s+(?:\S+\s+)?(?:account|mailbox)",
    # Verizon/Sendmail-style "unknown or illegal alias", "illegal user".
    r"illegal\s+(?:alias|user|address|recipient)",
    # Microsoft Exchange NDR catalogue: RESOLVER.ADR.RecipNotFound / ExRecipNotFound,
    # "Recipient not found by SMTP address lookup", "The email address you entered couldn't
    # be found", "e-mail address was not found in the recipient's e-mail system".
    r"recip(?:ient)?notfound|resolver\.adr\.(?:ex)?recip",
    r"not\s+found\s+by\s+smtp\s+address\s+lookup",
    r"(?:e-?mail\s+)?address\s+(?:you\s+entered\s+)?(?:couldn'?t|could\s+not)\s+be\s+found",
    r"address\s+(?:was\s+)?not\s+found\s+in\s+the\s+recipient",
    # Yandex's bounce list "Invalid mailbox", "Invalid recipient"; Mail.ru "invalid mailbox".
    r"invalid\s+(?:recipient|mailbox|user|e-?mail\s+address|destination\s+address)",
    r"(?:recipient|addressee)\s+(?:address\s+)?(?:is\s+)?invalid",
    # Lotus Domino router: "User ... not listed in Domino Directory" / "public Name & Address
    # Book"; GroupWise "User not found".
    r"not\s+listed\s+in\s+(?:the\s+)?(?:domino\s+directory|public\s+name)",
    # Exim routers: "Unrouteable address" (no router accepted the address).
    r"unrouteable\s+address",
    # qmail "This address no longer accepts mail"; Exchange/Gmail wording for removed users.
    r"(?:address|account|user|mailbox)\s+(?:is\s+)?no\s+longer\s+(?:valid|active|available|in\s+use|exists?)",
    r"no\s+longer\s+accepts\s+mail",
    # Russian and German MTA/provider translations of "does not exist" (Yandex, Mail.ru,
    # T-Online/GMX bounce pages).
    r"не\s+существует|нет\s+такого\s+пользователя|пользовател\w+\s+не\s+найден",
    r"(?:адрес|адресат|получатель|ящик)\w*\s+не\s+(?:найден|существует)|несуществующ",
    r"(?:empf[äa]nger|benutzer|adresse|postfach)\w*\s+(?:ist\s+)?(?:unbekannt|existiert\s+nicht)",
    r"existiert\s+nicht|n'existe\s+pas|destinataire\s+inconnu|no\s+existe",
)

# The domain does not exist or publishes that it takes no mail (hard).
DOMAIN_MISSING = _any(
    # Postfix smtp(8): "Host or domain name not found. Name service error for name=... type=
    # MX: Host not found"; Sendmail "Host unknown (Name server: ...: host not found)";
    # qmail "Sorry, I couldn't find any host named ... (#5.1.2)"; Yandex "DNS: no such domain".
    r"host\s+or\s+domain\s+name\s+not\s+found",
    r"host\s+unknown\s*\(name\s+server",
    r"couldn'?t\s+find\s+any\s+host\s+(?:named|by\s+that\s+name)",
    r"no\s+such\s+domain|domain\s+(?:name\s+)?(?:does\s+not|doesn'?t)\s+exist|domain\s+not\s+found",
    # RFC 3463 X.1.2: "the destination system ... does not exist or is incapable of accepting
    # mail": Exim "Unrouteable mail domain"; RFC 7504 521 "Host does not accept mail". (Exim's
    # "all relevant MX records point to non-existent hosts" is not here: the domain exists and
    # publishes MX records, its DNS is misconfigured, Exim FAQ Q0302; see TEMPORARY.)
    r"unrouteable\s+mail\s+domain",
    r"\b(?:host|server)\s+(?:\S+\s+)?does\s+not\s+accept\s+(?:e-?)?mail\b(?!\s+from)",
    # Microsoft Exchange NDR catalogue 5.4.4 "SMTPSEND.DNS.NonExistentDomain; nonexistent
    # domain".
    r"non-?existent\s+domain|nonexistentdomain",
    # Exchange Online 5.4.310 "DNS domain <domain> does not exist
    # [Message=InfoDomainNonexistent]" (Microsoft: the domain isn't registered); other MTAs
    # name the domain in the same place ("domain example.com does not exist").
    r"infodomainnonexistent|domain\s+(?:name\s+)?[\w.-]+\.[a-z]{2,}\s+(?:does\s+not|doesn'?t)\s+exist",
    # RFC 7505 (null MX): the domain declares it does not accept mail.
    r"null\s*mx|does\s+not\s+accept\s+(?:e-?)?mail\s*\(",
    r"domain\s+\S+\s+does\s+not\s+accept\s+(?:e-?)?mail",
)

# Microsoft Exchange Online "Fix NDR error 550 5.4.1": Directory-Based Edge Blocking answers
# "Recipient address rejected: Access denied" when the recipient is not in the tenant.
EXCHANGE_DBEB = _any(r"recipient\s+address\s+rejected:\s*access\s+denied")

# The provider closed the account for good: the address no longer exists (hard).
ACCOUNT_GONE = _any(
    # Yahoo "This account has been disabled or discontinued"; Mail.ru "user is terminated";
    # Exchange/Gmail wording for removed users ("account has been deleted").
    r"(?:account|mailbox|address|user)\s+(?:that\s+you\s+tried\s+to\s+reach\s+)?"
    r"(?:has\s+been\s+|is\s+|was\s+)?(?:permanently\s+)?"
    r"(?:closed|terminated|deleted|removed|discontinued)",
    r"(?:учетная|учётная)\s+запись\s+(?:\S+\s+)?удалена|ящик\s+(?:\S+\s+)?удал[её]н",
)

# The mailbox exists but is disabled or suspended (soft): RFC 3463 X.2.1 "Mailbox disabled,
# not accepting messages" may be transient; Gmail 5.2.1 "The email account that you tried to
# reach is disabled"/"inactive"; Mail.ru "account is disabled"; Yahoo "mailbox is disabled".
ACCOUNT_DISABLED = _any(
    r"(?:account|mailbox|address|user)\s+(?:that\s+you\s+tried\s+to\s+reach\s+)?"
    r"(?:has\s+been\s+|is\s+|was\s+)?(?:now\s+|currently\s+|temporarily\s+)?"
    r"(?:disabled|deactivated|inactive|suspended|blocked|frozen|locked|expired)",
    r"mailbox\s+disabled",
    r"(?:учетная|учётная)\s+запись\s+(?:\S+\s+)?(?:заблокирована|отключена)",
    r"ящик\s+(?:\S+\s+)?(?:заблокирован|отключен)",
)

# RFC 5321 3.4 / 551 "User not local; please try <forward-path>": the address moved away.
MAILBOX_MOVED = _any(r"user\s+not\s+local", r"mailbox\s+(?:has\s+)?moved")

# --- The receiver refused us: block lists, content, reputation, authentication, rate -------
SENDER_SIDE = _any(
    # Block lists: Postfix reject_rbl_client "Client host [...] blocked using <list>"; Exim
    # "is in a black list at"; Microsoft "part of their network is on our block list (S3150)",
    # "5.7.606-649 Access denied, banned sending IP"; Spamhaus, SpamCop, Barracuda,
    # SORBS, UCEPROTECT, Proofpoint, Mimecast as the names of the lists and filters.
    r"block(?:ed)?\s+using|blocked\s+by|(?:black|block|deny|ban)\s*-?\s*list(?:ed)?",
    r"(?<!not )\blisted\s+(?:in|on|at|by)\b|\bon\s+our\s+block",
    r"\b(?:rbl|dnsbl|spamhaus|spamcop|barracuda|sorbs|uceprotect|spamrats|senderscore)\b",
    r"banned\s+sending|\bbanned\b|\bip\s+(?:address\s+)?(?:\S+\s+)?(?:is\s+)?blocked",
    r"client\s+host\s+\S*\s*(?:blocked|rejected)",
    # Spam and content: Gmail 550 5.7.1 "likely unsolicited mail", Yandex "Message rejected
    # under suspicion of SPAM", Mail.ru "spam message rejected"; RFC 3463 X.7.1 refusals.
    r"spam|unsolicited|спам",
    r"content\s+(?:rejected|refused|filter\w*|polic\w*|restrict\w*)",
    r"message\s+content\s+(?:rejected|refused|not\s+accepted)",
    r"(?:rejected|refused|blocked)\s+(?:due\s+to|because\s+of)\s+(?:its\s+|the\s+)?content",
    r"virus|malware|phishing|infected|suspicious\s+(?:link|attachment|content)",
    r"bulk\s+(?:e-?mail|mail)|junk\s+mail",
    # Reputation and complaints: Yahoo [TSS04] "deferred due to unexpected volume or user
    # complaints"; Microsoft/Gmail "poor reputation".
    r"reputation|user\s+complaints|\bts[s]?\d{2}\b|\[ts\d+\]",
    # Authentication: RFC 7372 X.7.20-X.7.29 (DKIM, SPF, DMARC, reverse DNS); Gmail 5.7.26
    # "This mail is unauthenticated", 5.7.25 "PTR record"; Microsoft 5.7.57 "Client was not
    # authenticated"; Yahoo 5.7.9 "sender is unauthenticated".
    r"\b(?:spf|dkim|dmarc)\b|unauthenticated|not\s+authenticated",
    r"authentication\s+(?:is\s+)?(?:required|failed|failure|check|results?)",
    r"\bptr\b|reverse\s+(?:dns|lookup)|\brdns\b|forward[\s-]confirmed",
    r"\bhelo\b|\behlo\b",
    # Rate of *our* sending: Gmail 4.7.28 "unusual rate", Microsoft 4.7.500-699 "server busy",
    # Yahoo "Max message per connection", Postfix anvil "too many connections".
    r"too\s+many\s+(?:connections|messages|recipients|concurrent|sessions|errors)",
    r"unusual\s+(?:rate|traffic|volume)|unexpected\s+volume|excessive|rate\s*[-\s]?limit",
    r"max(?:imum)?\s+(?:messages?|connections?)\s+(?:per|reached)",
    r"sending\s+(?:rate|limit|quota)|throttl",
    # Policy: RFC 3463 X.7.1 "Delivery not authorized, message refused"; Gmail "has a policy
    # that prohibited the mail"; Yahoo 5.7.9 "not accepted for policy reasons"; relaying
    # refused by a receiver (RFC 5321 3.6.2; Postfix "Relay access denied", qmail "not in my
    # list of allowed rcpthosts", Sendmail "Relaying denied").
    r"\bpolic(?:y|ies)\b|prohibited|forbidden|not\s+authori[sz]ed|unauthori[sz]ed",
    r"relay(?:ing)?\s+(?:access\s+)?(?:denied|not\s+(?:permitted|allowed)|prohibited)",
    r"unable\s+to\s+relay|allowed\s+rcpthosts|we\s+do\s+not\s+relay|relaying\s+denied",
    r"access\s+denied.*(?:\bip\b|sender|traffic|connect|policy)",
    r"traffic\s+not\s+accepted|not\s+accepting\s+(?:e-?mail|mail|messages)\s+from",
    r"(?:refus\w*\s+to\s+accept|does\s+not\s+accept|will\s+not\s+accept)\s+(?:e-?)?mail\s+from",
    r"sender\s+(?:address\s+)?(?:rejected|denied|blocked|not\s+allowed|domain)",
    r"tls\s+(?:is\s+)?required|requires?\s+(?:tls|encryption)|not\s+in\s+whitelist",
    r"sender\s+verify\s+failed|callout\s+verification|verification\s+failed\s+for",
    # Mimecast's SMTP error codes article: "550 Envelope blocked - User Entry" / "- Policy",
    # the sender, IP and recipient matched a blocked-senders entry or a block policy.
    r"envelope\s+blocked",
    # qmail "sorry, your envelope sender domain must exist (#5.7.1)"; Postfix
    # reject_unknown_sender_domain; RFC 3463 X.1.7/X.1.8 wording.
    r"envelope\s+sender|mail\s+from\s+(?:address\s+)?(?:rejected|refused|denied)",
    # The recipient's own filter or block of *us*: RFC 3463 X.7.1 "delivery not authorized,
    # message refused"; Microsoft "recipient has blocked the sender"; Gmail 5.7.1 "the user
    # or domain that you are sending to (or from) has a policy that prohibited the mail".
    r"delivery\s+not\s+authori[sz]ed",
    r"(?:rejected|refused|blocked|filtered)\s+by\s+(?:the\s+)?(?:recipient|user|destination)",
    r"recipient\s+(?:has\s+)?(?:rejected|refused|blocked)\s+(?:your|the|this)",
    r"\bfiltered\b|message\s+filter|mail\s+filter",
    # Gmail 5.7.1 / Microsoft 5.6.x: messages not compliant with RFC 5322.
    r"not\s+(?:rfc\s*\d+\s+)?compliant|rfc\s*\d+\s+compliant",
    # Exim's default text for an ACL "deny" without a message.
    r"administrative\s+prohibition",
)

# The receiver refused the connection itself, in its greeting, before any recipient was
# named: RFC 5321 3.1 lets a server answer 554 instead of 220 ("No SMTP service here"), so
# the refusal is of the connecting client, never of an address. Postfix smtp(8) reports it as
# "host ... refused to talk to me: <reply>", Exim as "SMTP error from remote mail server after
# initial connection".
REFUSED_AT_GREETING = _any(
    r"refused\s+to\s+talk\s+to\s+me",
    r"after\s+(?:the\s+)?initial\s+connection",
    r"no\s+smtp\s+service\s+here",
)

# --- The mailbox exists but cannot take mail now (soft) ------------------------------------
MAILBOX_FULL = _any(
    # RFC 3463 X.2.2 "Mailbox full"; Gmail 4.2.2/5.2.2 "over quota"; Microsoft
    # 5.2.2 "STOREDRV.Deliver: mailbox full"; Yandex "Account is full", "Disk quota
    # exceeded"; Mail.ru "User quota exceeded"; GMX/T-Online "Postfach voll".
    r"mail\s*(?:box|folder)\s+(?:is\s+)?(?:full|over|exceed)",
    r"mailbox\s+(?:size\s+)?(?:limit\s+)?exceeded|inbox\s+is\s+full|account\s+is\s+full",
    r"over\s*quota|quota\s+(?:exceeded|full|exceed)|exceed\w*\s+(?:\w+\s+){0,2}quota",
    r"(?:disk|storage|mailbox)\s+(?:quota|space|full)",
    r"insufficient\s+(?:disk\s+|system\s+)?(?:space|storage)|out\s+of\s+storage",
    r"too\s+many\s+messages\s+in\s+(?:the\s+)?mailbox",
    r"ящик\s+переполнен|переполнен\w*\s+(?:почтовый\s+)?ящик|превышен\w*\s+(?:\S+\s+)?(?:квот|лимит|размер)",
    r"postfach\s+(?:ist\s+)?voll|speicherplatz|bo[iî]te\s+(?:aux\s+lettres\s+)?(?:est\s+)?pleine",
)

# Temporary or receiver-side trouble, whatever the code (soft).
TEMPORARY = _any(
    # RFC 5321 4.2.1 4yz wording; Exim "retry timeout exceeded", "retry time not reached for
    # any host after a long failure period"; qmail "I'm not going to try again; this message
    # has been in the queue too long"; Microsoft 4.4.7 "Message expired"; Postfix "delivery
    # temporarily suspended", "Connection timed out".
    r"try\s+(?:again\s+)?later|temporar(?:y|ily)|transient",
    # Postfix smtp(8) for a DNS TRY_AGAIN answer: "Host not found, try again".
    r"not\s+found,\s+try\s+again",
    # Postfix smtp(8) for a NODATA answer ("Host found but no data record of requested
    # type"): the name exists but publishes no mail host. RFC 3463 X.4.4 names "a DNS lookup
    # returning only an SOA record" as its example of "unable to route", not of X.1.2.
    r"host\s+found\s+but\s+no\s+data\s+record",
    r"connection\s+(?:timed\s+out|refused|reset|lost)|timed?\s*out",
    r"(?:could\s+not|couldn'?t|unable\s+to|wasn'?t\s+able\s+to)\s+(?:establish|connect|open)",
    r"in\s+the\s+queue\s+too\s+long|too\s+long\s+in\s+(?:the\s+)?queue",
    r"retry\s+(?:time(?:out)?|period)\s+(?:exceeded|expired|not\s+reached)|long\s+failure\s+period",
    r"message\s+expired|expired\s+after|delivery\s+time\s+expired",
    r"host\s+(?:is\s+)?(?:unreachable|down)|network\s+(?:is\s+)?unreachable|no\s+route\s+to\s+host",
    # RFC 5321 4.2.3 421 "Service not available, closing transmission channel" (a 5xx
    # "Service unavailable" is a refusal, not a temporary state).
    r"service\s+(?:is\s+)?temporarily\s+(?:not\s+available|unavailable)|server\s+busy",
    r"service\s+not\s+available,?\s+closing",
    r"greylist|graylist",
    r"resources?\s+(?:temporarily\s+)?unavailable|system\s+(?:resources|storage)",
    # RFC 3463 X.2.3 / X.3.4 "message length exceeds administrative limit", "too big".
    r"message\s+(?:is\s+)?(?:too\s+(?:large|big)|size\s+exceeds|length\s+exceeds)",
    r"exceed\w*\s+(?:the\s+)?(?:maximum|max|size)\s+(?:\w+\s+){0,3}size|size\s+limit",
    # RFC 3463 X.4.6 routing loop; Postfix "mail forwarding loop"; Exim "Too many Received".
    r"loop(?:s|ing)?\s+(?:back|detected)|mail\s+(?:forwarding\s+)?loop|routing\s+loop|too\s+many\s+hops",
    r"too\s+many\s+\"?received",
    # Gmail 4.2.1 / 5.2.1 "receiving mail at a rate that prevents additional messages":
    # the recipient's inflow, not our sending.
    r"receiving\s+mail\s+(?:too\s+quickly|at\s+a\s+rate)",
    # Receiving-side configuration trouble (RFC 3463 X.3.5, X.4.4 "unable to route" wording;
    # Exim "lowest numbered MX record points to local host" and "all relevant MX records
    # point to non-existent hosts", which Exim FAQ Q0301/Q0302 explain as the receiving
    # domain's misconfigured DNS; qmail control/locals).
    r"lowest\s+numbered\s+mx|misconfigur|local\s+configuration",
    r"mx\s+records?\s+points?\s+to\s+non-?existent\s+hosts?",
    r"isn'?t\s+in\s+my\s+control/locals",
    r"deferred",
)


_URL = re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+", re.IGNORECASE)
_EMAIL = re.compile(r"\S+@\S+")
_HOST = re.compile(r"\b(?:[a-z0-9-]+\.){1,}[a-z]{2,}\b(?!\s*\()", re.IGNORECASE)


def scrubbed(text: str) -> str:
    """``text`` without URLs, e-mail addresses and host names (they say nothing of a cause)."""
    return _HOST.sub(" ", _EMAIL.sub(" ", _URL.sub(" ", text)))


def has(pattern: re.Pattern[str], text: str) -> bool:
    return pattern.search(text) is not None
