"""`python -m services.renderer` as a process: ready, probes, metrics, a clean SIGTERM stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.renderer_harness import ROOT, free_port

pytestmark = pytest.mark.integration


def test_the_renderer_process_serves_probes_and_stops_cleanly_on_sigterm(
    amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")},
        "NEWSLETTER_MODE": "test",
        "NEWSLETTER_AMQP_URL": amqp_url,
        "NEWSLETTER_DATABASE_URL": sqlite_url,
        "NEWSLETTER_RENDERER_PROBE_PORT": str(port),
        "NEWSLETTER_VAR_DIR": str(tmp_path),
        "NEWSLETTER_LOG_FORMAT": "json",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.renderer"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = None
        for _ in range(1200):  # 60 s and more: a loaded machine starts slowly
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0)
                break
            except httpx.HTTPError:
                assert process.poll() is None, process.communicate()[1][-2000:]
                time.sleep(0.05)
        assert ready is not None, "the renderer did not answer"
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "alive"}
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "newsletter_render_seconds" in metrics
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err[-2000:]
    assert '"event": "renderer_stopping"' in err
