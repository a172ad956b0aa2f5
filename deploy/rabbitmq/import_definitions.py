"""Import the suite's RabbitMQ definitions through the management HTTP API (one-shot step).

Run by the ``rabbitmq-definitions`` service of deploy/compose.yaml once the broker is healthy;
uses only the standard library so that any Python image can run it. Environment:

- ``RABBITMQ_MANAGEMENT_URL`` (default ``http://rabbitmq:15672``)
- ``RABBITMQ_USER`` / ``RABBITMQ_PASSWORD``: an administrator of the broker
- ``RABBITMQ_DEFINITIONS`` (default: ``definitions.json`` beside this file)
- ``RABBITMQ_WAIT_S`` (default 120): how long to wait for the API to answer

Importing is idempotent: existing objects with the same properties are left as they are.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def definitions_request(
    *, base_url: str, user: str, password: str, body: bytes
) -> urllib.request.Request:
    """The POST that imports cluster-wide definitions (``/api/definitions``)."""
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.request.Request(  # noqa: S310 - the URL is the operator's broker
        base_url.rstrip("/") + "/api/definitions",
        data=body,
        method="POST",
        headers={"content-type": "application/json", "authorization": f"Basic {credentials}"},
    )


def import_definitions(
    *, base_url: str, user: str, password: str, path: Path, wait_s: float = 120.0
) -> int:
    """POST the definitions, retrying while the broker starts; returns the HTTP status."""
    body = json.dumps(json.loads(path.read_text(encoding="utf-8"))).encode()
    deadline = time.monotonic() + wait_s
    while True:
        request = definitions_request(base_url=base_url, user=user, password=password, body=body)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as err:
            if err.code in (401, 403) or time.monotonic() > deadline:
                raise
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise
        time.sleep(2.0)


def main() -> int:
    path = Path(
        os.environ.get("RABBITMQ_DEFINITIONS", str(Path(__file__).with_name("definitions.json")))
    )
    status = import_definitions(
        base_url=os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://rabbitmq:15672"),
        user=os.environ.get("RABBITMQ_USER", "newsletter"),
        password=os.environ["RABBITMQ_PASSWORD"],
        path=path,
        wait_s=float(os.environ.get("RABBITMQ_WAIT_S", "120")),
    )
    sys.stdout.write(f"definitions from {path} imported (HTTP {status})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
