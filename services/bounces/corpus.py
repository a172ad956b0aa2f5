"""Accuracy of the classifier on a labelled corpus (``labels.tsv``: file, class, recipients).

A file counts as correct for its class when the classifier's finding for it has the labelled
class (files with several findings take the most severe, as the intake would act on it).
Recipients are scored separately: the set found must equal the set labelled.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from services.bounces.classifier import Finding, classify

_SEVERITY = ("complaint", "hard", "policy", "soft", "delayed", "auto-reply", "unknown")


@dataclass(frozen=True)
class Label:
    file: str
    bounce_class: str
    recipients: frozenset[str]


@dataclass
class ClassScore:
    total: int = 0
    correct: int = 0
    predicted: int = 0  # files predicted as this class (for precision)

    @property
    def recall(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 0.0


@dataclass
class Report:
    per_class: dict[str, ClassScore] = field(default_factory=dict)
    files: int = 0
    class_correct: int = 0
    recipients_correct: int = 0
    mistakes: list[str] = field(default_factory=list)
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def accuracy(self) -> float:
        return self.class_correct / self.files if self.files else 0.0

    @property
    def recipient_accuracy(self) -> float:
        return self.recipients_correct / self.files if self.files else 0.0


def read_labels(path: Path) -> list[Label]:
    labels: list[Label] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = [*line.split("\t"), "", ""][:3]
        recipients = frozenset(r.strip().lower() for r in parts[2].split(",") if r.strip())
        labels.append(Label(parts[0], parts[1].strip(), recipients))
    return labels


def overall_class(findings: list[Finding]) -> str:
    classes = {f.bounce_class for f in findings}
    return next((c for c in _SEVERITY if c in classes), "unknown")


def evaluate(root: Path, *, labels_file: str = "labels.tsv") -> Report:
    report = Report()
    for label in read_labels(root / labels_file):
        findings = classify((root / label.file).read_bytes())
        predicted = overall_class(findings)
        found = frozenset(f.recipient.lower() for f in findings if f.recipient)
        report.files += 1
        score = report.per_class.setdefault(label.bounce_class, ClassScore())
        score.total += 1
        report.per_class.setdefault(predicted, ClassScore()).predicted += 1
        report.confusion[(label.bounce_class, predicted)] += 1
        if predicted == label.bounce_class:
            score.correct += 1
            report.class_correct += 1
        else:
            report.mistakes.append(f"{label.file}: labelled {label.bounce_class}, got {predicted}")
        if found == label.recipients:
            report.recipients_correct += 1
        else:
            wanted = ",".join(sorted(label.recipients)) or "-"
            got = ",".join(sorted(found)) or "-"
            report.mistakes.append(f"{label.file}: recipients {wanted}, got {got}")
    return report


def format_report(report: Report) -> str:
    lines = [f"{'class':<11} {'files':>5} {'correct':>7} {'recall':>7} {'precision':>9}"]
    for name in _SEVERITY:
        score = report.per_class.get(name)
        if score is None or (score.total == 0 and score.predicted == 0):
            continue
        lines.append(
            f"{name:<11} {score.total:>5} {score.correct:>7} {score.recall:>7.1%} "
            f"{score.precision:>9.1%}"
        )
    lines.append(
        f"overall: {report.class_correct}/{report.files} classes correct "
        f"({report.accuracy:.1%}), recipients exact in {report.recipients_correct}/"
        f"{report.files} ({report.recipient_accuracy:.1%})"
    )
    return "\n".join(lines)
