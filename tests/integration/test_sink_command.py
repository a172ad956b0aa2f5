"""``newsletter sink`` runs the Maildir SMTP sink alone: real SMTP over a socket, real process."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

from newsletter_cli.mailbox_reader import read_maildir
from tests.support.ports import free_port as _free_port

SINK = (sys.executable, "-m", "newsletter_cli.main", "sink")


def _wait_for_greeting(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the sink exited with {process.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(64).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"no SMTP greeting on port {port} within {timeout}s")


def test_sink_stores_each_message_in_the_maildir_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    maildir = tmp_path / "mail"
    process = subprocess.Popen(
        [*SINK, "--port", str(port), "--maildir", str(maildir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_greeting(port, process)
        message = EmailMessage()
        message["From"] = "digest@news.digest.tld"
        message["To"] = "чытач@example.org"
        message["Subject"] = "Штотыднёвы дайджэст"
        message.set_content("Прывітанне")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.send_message(message)
        stored = read_maildir(maildir)
        assert len(stored) == 1, f"expected one stored message, found {len(stored)}"
        assert stored[0].subject == "Штотыднёвы дайджэст"
        assert "чытач@example.org" in stored[0].recipient
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert b"SMTP sink stopped" in stderr


def test_sink_says_why_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*SINK, "--port", str(port), "--maildir", str(tmp_path / "mail")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert f"sink failed to start on 127.0.0.1:{port}" in done.stderr
