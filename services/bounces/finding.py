"""One recipient of one report, classified: what every reader of reports produces."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Finding:
    """One recipient of one report, classified."""

    recipient: str
    status: str
    action: str
    bounce_class: str
    reason: str
    diagnostic: str = ""
    delivery_id: int | None = None
    kind: str = "bounce"  # bounce | complaint | auto-reply | dsn
    feedback_type: str = ""  # RFC 5965 Feedback-Type of a complaint ("" if none was given)

    def as_line(self, file: str) -> dict[str, object]:
        """The JSON line of ``newsletter bounces classify``."""
        return {
            "file": file,
            "recipient": self.recipient or None,
            "status": self.status,
            "action": self.action,
            "class": self.bounce_class,
            "reason": self.reason,
        }

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
