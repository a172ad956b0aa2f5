"""The classifier on the labelled corpus and on the rules of RFC 3463/3464/3834/5965."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.bounces.classes import classify_failure
from services.bounces.classifier import classify
from services.bounces.cli import app as bounces_app
from services.bounces.corpus import evaluate, format_report, overall_class, read_labels
from shared import verp

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
SECRET = "test-secret-key-" + "x" * 32


def test_corpus_accuracy_per_class_is_reported_and_high() -> None:
    report = evaluate(CORPUS)
    print("\n" + format_report(report))  # the figures, visible with pytest -s
    assert report.files >= 130
    assert report.accuracy >= 0.95, report.mistakes
    assert report.recipient_accuracy >= 0.9, report.mistakes
    for name in ("hard", "soft", "policy", "complaint", "delayed", "auto-reply"):
        assert report.per_class[name].total > 0, f"corpus has no {name} sample"


@pytest.mark.parametrize(
    "label",
    [lbl for lbl in read_labels(CORPUS / "labels.tsv") if lbl.file.startswith("handmade/")],
    ids=lambda lbl: lbl.file,
)
def test_handmade_sample_is_classified_as_labelled(label: object) -> None:
    file, expected_class, recipients = label.file, label.bounce_class, label.recipients  # type: ignore[attr-defined]
    findings = classify((CORPUS / file).read_bytes())
    assert overall_class(findings) == expected_class, findings
    assert {f.recipient.lower() for f in findings if f.recipient} == set(recipients)


@pytest.mark.parametrize(
    ("action", "status", "text", "expected"),
    [
        ("failed", "4.4.7", "message expired", "soft"),  # failed + 4.x.x is soft, not hard
        ("failed", "5.2.2", "mailbox full", "soft"),  # RFC 3463: persistent transient
        ("failed", "5.1.1", "user unknown", "hard"),
        ("failed", "5.7.1", "blocked using spamhaus", "policy"),
        ("failed", "5.7.26", "unauthenticated email, DMARC policy", "policy"),
        ("failed", "5.7.1", "550 5.7.1 No such user", "hard"),
        ("failed", "5.1.8", "sender address rejected", "policy"),
        ("delayed", "4.4.1", "connection timed out", "delayed"),
        ("delivered", "2.0.0", "ok", "unknown"),
        ("failed", "5.0.0", "quota exceeded", "soft"),
        ("failed", "5.3.0", "local configuration error", "soft"),  # the system, not the address
        ("failed", "5.4.1", "Recipient address rejected: Access denied", "hard"),
        ("failed", "5.6.0", "message content rejected", "policy"),
    ],
)
def test_status_and_wording_decide_the_class(
    action: str, status: str, text: str, expected: str
) -> None:
    assert classify_failure(action=action, status=status, text=text).bounce_class == expected


def _dsn(*, to: str, recipient: str, status: str, diagnostic: str) -> bytes:
    return (
        f"From: MAILER-DAEMON@mx.example.net\r\nTo: {to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-1@mx.example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n'
        "\r\n--b\r\nContent-Type: text/plain\r\n\r\nCould not deliver.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n\r\n--b--\r\n"
    ).encode()


def test_verp_token_names_the_delivery_and_a_forged_one_does_not() -> None:
    good = verp.return_path(secret_key=SECRET, delivery_id=4242, domain="lists.example.org")
    forged = good.replace(good.split("-")[1][:4], "0000")
    data = _dsn(
        to=good, recipient="gone@example.com", status="5.1.1", diagnostic="550 5.1.1 unknown"
    )
    [finding] = classify(data, secret_key=SECRET)
    assert (finding.delivery_id, finding.bounce_class, finding.recipient) == (
        4242,
        "hard",
        "gone@example.com",
    )
    data = _dsn(to=forged, recipient="gone@example.com", status="5.1.1", diagnostic="550")
    assert classify(data, secret_key=SECRET)[0].delivery_id is None


def test_classify_command_prints_one_json_line_per_recipient(tmp_path: Path) -> None:
    files = [CORPUS / "flufl/yahoo_05.txt", CORPUS / "handmade/arf_complaint_01.eml"]
    result = CliRunner().invoke(bounces_app, ["classify", *map(str, files)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["recipient"] for line in lines] == [
        "userx@example.com",
        "usery@example.com",
        "reader.one@yahoo.example",
    ]
    assert set(lines[0]) == {"file", "recipient", "status", "action", "class", "reason"}
    assert [line["class"] for line in lines] == ["hard", "hard", "complaint"]


def test_accuracy_command_prints_figures_per_class() -> None:
    result = CliRunner().invoke(bounces_app, ["accuracy", str(CORPUS)])
    assert result.exit_code == 0, result.output
    assert "complaint" in result.output
    assert "overall:" in result.output


def test_garbage_input_yields_one_unknown_finding() -> None:
    [finding] = classify(b"\x00\xff not a message at all")
    assert (finding.recipient, finding.bounce_class) == ("", "unknown")


def test_a_broken_encoded_subject_does_not_stop_reading_the_report() -> None:
    data = _dsn(to="x@example.org", recipient="gone@example.com", status="5.1.1", diagnostic="550")
    data = data.replace(b"Subject: Undelivered", b"Subject: =?utf-8?b?0J3QtdC?= Undelivered")
    [finding] = classify(data)
    assert (finding.recipient, finding.bounce_class) == ("gone@example.com", "hard")


def test_classify_command_reads_folders_and_survives_missing_files(tmp_path: Path) -> None:
    folder = tmp_path / "box"
    folder.mkdir()
    (folder / "one.eml").write_bytes((CORPUS / "flufl/dsn_11.txt").read_bytes())
    result = CliRunner().invoke(bounces_app, ["classify", str(folder), str(tmp_path / "missing")])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [(line["recipient"], line["class"]) for line in lines] == [
        ("joem@example.com", "hard"),
        (None, "unknown"),
    ]
