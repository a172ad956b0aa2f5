"""deploy/ci/images/nginx-entrypoint.sh: the Debian nginx image renders the proxy's template as
the official image does, so deploy/compose.yaml's ``proxy`` service runs unchanged on it.

The entry point runs here with the host's envsubst (gettext-base) and a stand-in ``nginx`` on
PATH that records its arguments; the rendered file is then checked by the real nginx
(``nginx -t``), as tests/integration/test_public_proxy.py does with Python's Template.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.integration.test_deploy_compose import DEPLOY
from tests.integration.test_public_proxy import NGINX, main_config

ENTRYPOINT = DEPLOY / "ci" / "images" / "nginx-entrypoint.sh"
TEMPLATES = DEPLOY / "nginx" / "templates"


def run_entrypoint(tmp_path: Path, environment: dict[str, str]) -> tuple[Path, str]:
    assert shutil.which("envsubst"), "install Debian's gettext-base (envsubst)"
    bin_dir, out = tmp_path / "bin", tmp_path / "conf.d"
    bin_dir.mkdir()
    out.mkdir()
    calls = tmp_path / "nginx-calls"
    fake = bin_dir / "nginx"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n', encoding="utf-8")
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOSTNAME": "proxy-container",
        "NGINX_ENVSUBST_TEMPLATE_DIR": str(TEMPLATES),
        "NGINX_ENVSUBST_OUTPUT_DIR": str(out),
        **environment,
    }
    done = subprocess.run(
        ["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True, check=False, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return out / "newsletter.conf", calls.read_text(encoding="utf-8")


def test_the_compose_proxy_environment_renders_a_config_nginx_accepts(tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    environment = dict(compose["services"]["proxy"]["environment"])
    # Upstream names resolve only inside the compose network; here they are loopback addresses.
    environment["NEWSLETTER_SUBSCRIPTION_UPSTREAM"] = "127.0.0.1:8000"
    environment["NEWSLETTER_RENDERER_UPSTREAM"] = "127.0.0.1:9101"
    environment["NEWSLETTER_PROXY_PORT"] = "127.0.0.1:8080"
    rendered, calls = run_entrypoint(tmp_path, environment)
    text = rendered.read_text(encoding="utf-8")
    assert "${NEWSLETTER_" not in text, "every NEWSLETTER_ variable was replaced"
    assert "server 127.0.0.1:8000;" in text
    assert "listen 127.0.0.1:8080;" in text
    for own in ("$http_host", "$scheme", "$proxy_add_x_forwarded_for"):
        assert own in text, f"nginx's own {own} must survive envsubst"
    assert calls.splitlines() == ["-t -q", "-g daemon off;"], "config test, then the foreground"
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    config = main_config(prefix, rendered)
    check = subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr


def test_variables_outside_the_filter_are_left_alone(tmp_path: Path) -> None:
    rendered, _ = run_entrypoint(
        tmp_path,
        {
            "NGINX_ENVSUBST_FILTER": "^NEWSLETTER_",
            "NEWSLETTER_PROXY_PORT": "8080",
            "NEWSLETTER_SUBSCRIPTION_UPSTREAM": "subscription:8000",
            "NEWSLETTER_RENDERER_UPSTREAM": "renderer:9101",
            "scheme": "not-nginx",  # a same-named environment variable outside the filter
        },
    )
    text = rendered.read_text(encoding="utf-8")
    assert "$scheme" in text
    assert "not-nginx" not in text
