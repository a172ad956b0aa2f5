"""Ports for the servers a test starts.

Asking the kernel for port 0 and closing the socket races under pytest-xdist: between the close
and the server's bind, another worker (or any outgoing connection, which draws its source port
from the same ephemeral range, 32768-60999 here) may take the port. Each worker therefore draws
from a block of its own below the ephemeral range, in order, checking that the port binds.
"""

from __future__ import annotations

import itertools
import os
import socket

_BASE = 20000
_BLOCK = 1500  # workers gw0..gw2 use 20000-24499, clear of RabbitMQ's 25672 and the kernel's range
_next = itertools.count()


def _worker() -> int:
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = name.removeprefix("gw")
    return int(digits) % 3 if digits.isdigit() else 0


def free_port() -> int:
    """A loopback port no other worker of this run hands out and that binds right now."""
    start = _BASE + _worker() * _BLOCK
    for _ in range(_BLOCK):
        port = start + next(_next) % _BLOCK
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {start}-{start + _BLOCK - 1}")
