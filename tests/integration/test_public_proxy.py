"""deploy/nginx's reverse proxy, run with Debian's nginx (``apt-get install nginx-light``) in
front of the real renderer and subscription app: readers see one origin.

The subscription app here forwards the archive's paths to a port where nothing listens, so an
archive page that answers 200 through nginx was routed to the renderer by nginx itself.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from pathlib import Path
from string import Template

import httpx
import pytest

from services.subscription.app import create_app
from services.subscription.archive_proxy import ARCHIVE_PATHS
from shared.settings import LANGUAGES, load_settings
from tests.integration.renderer_harness import running_renderer
from tests.support.ports import free_port
from tests.support.socket_app import on_socket

pytestmark = pytest.mark.integration

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy/nginx/templates/newsletter.conf.template"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def rendered(*, port: int, subscription: int, renderer: int) -> str:
    return Template(TEMPLATE.read_text(encoding="utf-8")).safe_substitute(
        NEWSLETTER_PROXY_PORT=f"127.0.0.1:{port}",
        NEWSLETTER_SUBSCRIPTION_UPSTREAM=f"127.0.0.1:{subscription}",
        NEWSLETTER_RENDERER_UPSTREAM=f"127.0.0.1:{renderer}",
    )


def main_config(prefix: Path, site: Path) -> Path:
    config = prefix / "nginx.conf"
    config.write_text(
        f"daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log warn;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {prefix}/body;\n"
        f"  proxy_temp_path {prefix}/proxy;\n  include {site};\n}}\n",
        encoding="utf-8",
    )
    return config


def test_the_proxy_routes_exactly_the_archive_paths_the_demo_forwards() -> None:
    text = TEMPLATE.read_text(encoding="utf-8")
    to_renderer = re.findall(
        r"location\s+(~|=)\s+(\S+)\s*\{[^}]*\}[^}]*proxy_pass http://newsletter_renderer;", text
    )
    patterns = [re.compile(p) if kind == "~" else p for kind, p in to_renderer]

    def routed(path: str) -> bool:
        return any(p.match(path) if isinstance(p, re.Pattern) else p == path for p in patterns)

    for prefix in ARCHIVE_PATHS:
        assert routed(prefix), prefix
        if prefix != "/sitemap.xml":
            assert routed(prefix + "/issues/51"), prefix
    for path in ("/", "/subscribe", "/confirm", "/unsubscribe", "/preferences", "/admin", "/enx"):
        assert not routed(path), f"{path} belongs to the subscription service"
    assert {f"/{lang}" for lang in LANGUAGES} <= set(ARCHIVE_PATHS)


async def test_nginx_serves_signup_and_archive_on_one_origin(
    vhost_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    port, app_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(
        mode="test",
        amqp_url=vhost_url,
        database_url=sqlite_url,
        var_dir=tmp_path,
        public_url=base,
        secret_key="proxy-test-secret-" + "q" * 32,
        admin_token="proxy-admin",
    )
    async with running_renderer(settings, tmp_path) as renderer:
        dead = settings.model_copy(update={"renderer_probe_port": free_port()})
        async with on_socket(create_app(dead), port=app_port):
            prefix = tmp_path / "nginx"
            prefix.mkdir()
            site = prefix / "newsletter.conf"
            site.write_text(
                rendered(
                    port=port, subscription=app_port, renderer=renderer.settings.renderer_probe_port
                ),
                encoding="utf-8",
            )
            config = main_config(prefix, site)
            try:
                check = await asyncio.create_subprocess_exec(
                    NGINX, "-t", "-p", str(prefix), "-c", str(config), stderr=subprocess.PIPE
                )
            except FileNotFoundError as err:
                raise AssertionError("install Debian's nginx: apt-get install nginx-light") from err
            _, errors = await check.communicate()
            assert check.returncode == 0, errors.decode()
            nginx = await asyncio.create_subprocess_exec(
                NGINX, "-p", str(prefix), "-c", str(config)
            )
            try:
                async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                    deadline = time.monotonic() + 10
                    while True:
                        try:
                            signup = await client.get("/?lang=be")
                            break
                        except httpx.TransportError:
                            assert time.monotonic() < deadline, "nginx did not start"
                            await asyncio.sleep(0.05)
                    archive = await client.get("/be/")
                    old = await client.get("/archive/ru")
                    sitemap = await client.get("/sitemap.xml")
                    missing = await client.get("/ru/issues/999")
                    editor = await client.get("/editor")
                    probe = await client.get("/metrics")
                    posted = await client.post("/en/", data={"x": "1"})
            finally:
                nginx.terminate()
                await asyncio.wait_for(nginx.wait(), 10)
    assert signup.status_code == 200
    assert 'name="email"' in signup.text
    assert archive.status_code == 200, "nginx routed the archive to the renderer"
    assert "Архіў Штотыднёвага дайджэста" in archive.text
    assert f'<link rel="canonical" href="{base}/be/">' in archive.text
    assert (old.status_code, old.headers["location"]) == (301, f"{base}/ru/")
    assert sitemap.status_code == 200
    assert missing.status_code == 404
    assert "Страница не найдена" in missing.text
    assert editor.status_code == 404, "the editor page is not on the public origin"
    assert probe.status_code == 404
    assert posted.status_code == 403
