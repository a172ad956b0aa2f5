"""Preflight of a rendered edition, before any send: size, links, placeholders, images, spam
score and MIME defects. Errors block a send; warnings are shown to the editor.
"""

from __future__ import annotations

import email
from dataclasses import dataclass, field
from email import policy
from email.headerregistry import Address
from html.parser import HTMLParser

from services.renderer.errors import N_, Gettext, Wording
from services.renderer.fill import PER_RECIPIENT, FillPlan, recipient_values, unresolved_markers
from services.renderer.lines import SMTP_LINE_LIMIT, longest_line
from services.renderer.link_checks import link_wording
from services.renderer.mime import build_message
from services.renderer.render import RenderedMail
from services.renderer.spam import SpamCheckUnavailable, spam_score
from shared.addresses import address_hash
from shared.links import Links
from shared.tokens import TokenSigner

CLIP_LIMIT = 102 * 1024  # Gmail clips HTML over about 102 KB
CLIP_WARNING = 90 * 1024
SPAM_LIMIT = 1.0
_TEMPLATE_LEFTOVERS = ("{{", "}}", "{%", "%}", "%(")


_LEVELS = {"error": N_("error"), "warning": N_("warning")}


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    check: str
    message: str
    wording: Wording | None = field(default=None, compare=False)  # the message, coded

    def worded(self, gettext: Gettext | None = None) -> str:
        """``level: check: message``, the level and the message in ``gettext``'s language."""
        say: Gettext = gettext or (lambda text: text)
        message = self.wording.worded(gettext) if self.wording else self.message
        return f"{say(_LEVELS.get(self.level, self.level))}: {self.check}: {message}"

    def __str__(self) -> str:
        return self.worded()


@dataclass
class PreflightReport:
    language: str
    html_bytes: int = 0
    spam_score: float | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, check: str, message: str | Wording) -> None:
        self.findings.append(_finding("error", check, message))

    def warn(self, check: str, message: str | Wording) -> None:
        self.findings.append(_finding("warning", check, message))


def _finding(level: str, check: str, message: str | Wording) -> Finding:
    if isinstance(message, Wording):
        return Finding(level, check, str(message), wording=message)
    return Finding(level, check, message)


class _LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []  # (tag, url)
        self.images_without_alt: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and "href" in values:
            self.links.append((tag, values["href"] or ""))
        if tag == "img":
            self.links.append((tag, values.get("src") or ""))
            # An image marked presentational (the open pixel) is rightly silent: alt="".
            decorative = values.get("role") in {"presentation", "none"}
            if not decorative and not (values.get("alt") or "").strip():
                self.images_without_alt.append(values.get("src") or "")


@dataclass(frozen=True)
class SampleRecipient:
    """Who a preview or a preflight fills an edition for (links as the real ones look)."""

    to: str
    unsubscribe_url: str
    preferences_url: str
    one_click_url: str

    @classmethod
    def for_settings(cls, *, public_url: str, secret_key: str, domain: str) -> SampleRecipient:
        to = f"reader@{domain}"
        links = Links(public_url=public_url, signer=TokenSigner(secret_key))
        email_hash = address_hash(to)
        return cls(
            to=to,
            unsubscribe_url=links.unsubscribe(0, email_hash),
            preferences_url=links.preferences(0, email_hash),
            one_click_url=links.one_click(0, email_hash),
        )


def sample_message(mail: RenderedMail, *, sender: Address, sample: SampleRecipient) -> bytes:
    """The edition filled for a sample recipient, as complete message bytes."""
    values = recipient_values(
        unsubscribe_url=sample.unsubscribe_url,
        preferences_url=sample.preferences_url,
        recipient=sample.to,
    )
    return build_message(
        sender=sender,
        to=sample.to,
        subject=mail.subject,
        html=FillPlan(mail.html, escape_html=True).fill(values),
        text=FillPlan(mail.text, escape_html=False).fill(values),
        language=mail.content_language,
        list_unsubscribe_url=sample.one_click_url,
    )


def check_static(  # noqa: PLR0912 - one branch per check
    mail: RenderedMail,
) -> PreflightReport:
    """Every check that needs no external program (fast; the consumer runs these)."""
    report = PreflightReport(language=mail.language, html_bytes=len(mail.html.encode()))
    if report.html_bytes > CLIP_LIMIT:
        report.error(
            "size",
            Wording.of(
                N_("HTML is %(size)s bytes; Gmail clips over %(limit)s"),
                size=report.html_bytes,
                limit=CLIP_LIMIT,
            ),
        )
    elif report.html_bytes > CLIP_WARNING:
        report.warn(
            "size",
            Wording.of(
                N_("HTML is %(size)s bytes, close to the %(limit)s clip"),
                size=report.html_bytes,
                limit=CLIP_LIMIT,
            ),
        )
    collector = _LinkCollector()
    collector.feed(mail.html)
    for tag, url in collector.links:
        if url in PER_RECIPIENT:
            continue
        reason = link_wording(url, image=tag == "img")
        if reason is not None:
            report.error("links", reason)
    for src in collector.images_without_alt:
        report.error("images", Wording.of(N_("image %(url)s has no alt text"), url=src))
    for part, text in (("subject", mail.subject), ("html", mail.html), ("text", mail.text)):
        leftovers = unresolved_markers(text)
        if leftovers:
            report.error(
                "placeholders",
                Wording.of(
                    N_("%(part)s holds unresolved markers %(markers)s"),
                    part=part,
                    markers=sorted(leftovers),
                ),
            )
        found = [t for t in _TEMPLATE_LEFTOVERS if t in text]
        if found and part != "html":
            report.error(
                "placeholders",
                Wording.of(N_("%(part)s holds template syntax %(found)s"), part=part, found=found),
            )
    if not mail.subject.strip():
        report.error("subject", Wording(N_("the subject is empty")))
    if not mail.preheader.strip():
        report.warn("preheader", Wording(N_("the preheader is empty")))
    for part, text in (("html", mail.html), ("text", mail.text)):
        if longest_line(text) >= SMTP_LINE_LIMIT - 2:
            report.warn(
                "lines",
                Wording.of(
                    N_("%(part)s has a line over %(limit)s bytes: quoted-printable"),
                    part=part,
                    limit=SMTP_LINE_LIMIT,
                ),
            )
    return report


def check_message(report: PreflightReport, message: bytes) -> None:
    """The message parses with no defects (policy default)."""
    parsed = email.message_from_bytes(message, policy=policy.default)
    for part in parsed.walk():
        for defect in part.defects:
            report.error("mime", f"{part.get_content_type()}: {type(defect).__name__}")


def check_spam(report: PreflightReport, message: bytes, *, required: bool) -> None:
    try:
        score, rules = spam_score(message)
    except SpamCheckUnavailable as err:
        (report.error if required else report.warn)("spam", str(err))
        return
    report.spam_score = score
    if score >= SPAM_LIMIT:
        report.error(
            "spam",
            Wording.of(
                N_("SpamAssassin score %(score)s (must be below %(limit)s): %(rules)s"),
                score=score,
                limit=SPAM_LIMIT,
                rules=rules,
            ),
        )


def preflight(
    mail: RenderedMail,
    *,
    sender: Address,
    sample: SampleRecipient,
    spam: bool = True,
    spam_required: bool = False,
) -> PreflightReport:
    """All checks of one rendered edition (SpamAssassin runs a process: about a second)."""
    report = check_static(mail)
    message = sample_message(mail, sender=sender, sample=sample)
    check_message(report, message)
    if spam:
        check_spam(report, message, required=spam_required)
    return report
