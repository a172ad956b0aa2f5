"""``python -m services.subscription`` and ``newsletter subscription serve`` as real processes:
ready on /readyz, then a clean stop on SIGTERM and SIGINT; a clear refusal without a secret."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.subscription_support import private_amqp_url
from tests.support.ports import free_port as _free_port

pytestmark = pytest.mark.integration
__all__ = ["private_amqp_url"]


def _env(amqp_url: str, database_url: str, port: int) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return {
        **clean,
        "NEWSLETTER_MODE": "demo",
        "NEWSLETTER_AMQP_URL": amqp_url,
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_SUBSCRIPTION_PORT": str(port),
        "NEWSLETTER_LOG_FORMAT": "json",
    }


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the service exited with {process.returncode}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the service never became ready")


@pytest.mark.parametrize(
    ("command", "stop"),
    [
        (["-m", "services.subscription"], signal.SIGTERM),
        (["-m", "newsletter_cli.main", "subscription", "serve"], signal.SIGINT),
    ],
)
def test_the_service_process_serves_and_stops_cleanly(
    private_amqp_url: str, sqlite_url: str, command: list[str], stop: signal.Signals
) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, *command],
        env=_env(private_amqp_url, sqlite_url, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(port, process)
        page = httpx.get(f"http://127.0.0.1:{port}/?lang=ru", timeout=5)
        assert page.status_code == 200
        assert '<html lang="ru">' in page.text
        process.send_signal(stop)
        output = process.communicate(timeout=30)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output[-2000:]
    assert "subscription_stopped" in output


def test_production_mode_without_a_secret_key_refuses_to_start_with_advice(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = _env("amqp://guest:guest@127.0.0.1:1/", sqlite_url, _free_port())
    env["NEWSLETTER_MODE"] = "production"
    done = subprocess.run(
        [sys.executable, "-m", "services.subscription"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "NEWSLETTER_SECRET_KEY" in done.stderr
