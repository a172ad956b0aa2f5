"""Accuracy of the classifier on a labelled corpus (``labels.tsv``: file, class, recipients).

A file counts as correct for its class when the classifier's finding for it has the labelled
class (files with several findings take the most severe, as the intake would act on it).
Recipients are scored separately: the set found must equal the set labelled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from services.bounces.classifier import classify
from services.bounces.finding import Finding

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


def hard_scores(report: Report) -> tuple[float, float]:
    """(precision, recall) of ``hard``: the class that suppresses a reader."""
    score = report.per_class.get("hard", ClassScore())
    return score.precision, score.recall


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


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_side_by_side(parts: dict[str, Report | None]) -> str:
    """Frozen and working figures in columns (a missing part prints ``-``)."""
    names = list(parts)
    rows: list[tuple[str, list[str]]] = [
        ("files", [str(r.files) if r else "-" for r in parts.values()])
    ]

    def metric(label: str, get: Callable[[Report], float | None]) -> None:
        rows.append((label, [_cell(get(r)) if r else "-" for r in parts.values()]))

    metric("accuracy", lambda r: r.accuracy)
    metric("hard precision", lambda r: hard_scores(r)[0])
    metric("hard recall", lambda r: hard_scores(r)[1])
    metric("complaint recall", partial(_recall, name="complaint"))
    metric("recipients exact", lambda r: r.recipient_accuracy)
    for name in _SEVERITY:
        metric(f"{name} precision", partial(_precision, name=name))
        metric(f"{name} recall", partial(_recall, name=name))
        rows.append(
            (
                f"{name} labelled",
                [
                    str(r.per_class.get(name, ClassScore()).total) if r else "-"
                    for r in parts.values()
                ],
            )
        )
    width = max(len(label) for label, _ in rows) + 2
    lines = ["".ljust(width) + "".join(n.rjust(10) for n in names)]
    lines += [label.ljust(width) + "".join(v.rjust(10) for v in values) for label, values in rows]
    return "\n".join(lines)


def _recall(report: Report, name: str) -> float | None:
    score = report.per_class.get(name)
    return score.recall if score and score.total else None


def _precision(report: Report, name: str) -> float | None:
    score = report.per_class.get(name)
    return score.precision if score and score.predicted else None
