"""RabbitMQ nodes of one's own, started from Debian's ``rabbitmq-server``, for fault drills.

Each node gets its own name (``nl-test-<uuid>-<n>@localhost``), its own AMQP and distribution
ports on 127.0.0.1, its own data and log folders under a temporary folder, an empty plugin
list (no management listener) and its own config file, so it never reads the machine's
``/etc/rabbitmq`` files. The nodes and their CLI calls use a cookie generated for the run (in
a ``HOME`` of their own): a CLI call made here cannot even authenticate to the machine's node
(``rabbit@<host>`` on 5672), which this module never addresses.

Stopping, killing (``SIGKILL`` to the node's process group) and restarting a node are the
faults; :func:`own_nodes` removes everything at the end, even when the body raised, and kills
stray processes whose environment names one of its own nodes (and nothing else).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

_SBIN = Path("/usr/lib/rabbitmq/bin")
# The CLI tools take a distribution port from this range for themselves; keep nodes out of it.
_CLI_PORTS = range(35672, 35683)
_MACHINE_PORTS = {4369, 5672, 15672, 25672}


class RabbitNodeError(RuntimeError):
    """A node did not start, stop or join in time, or a CLI call failed."""


def _free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _CLI_PORTS and port not in _MACHINE_PORTS:
            return port


def _binary(name: str) -> str:
    local = _SBIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise RabbitNodeError(f"{name} not found: install Debian's rabbitmq-server")
    return found


@dataclass
class RabbitNode:
    """One node: its name, ports and folders; the process while it runs."""

    name: str
    amqp_port: int
    dist_port: int
    base: Path
    home: Path
    process: subprocess.Popen[bytes] | None = None
    started_s: list[float] = field(default_factory=list)

    @property
    def short_name(self) -> str:
        return self.name.partition("@")[0]

    def amqp_url(self, vhost: str = "/") -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/{quote(vhost, safe='')}"

    @property
    def pid_file(self) -> Path:
        return self.base / "node.pid"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.home),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            # An empty env file instead of /etc/rabbitmq/rabbitmq-env.conf (the machine's name).
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def prepare(self) -> None:
        (self.base / "log").mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}\n"
            "log.console = false\n"
            "log.file.level = warning\n"
            # Several nodes share a small machine: never block publishers for memory or disk.
            "vm_memory_high_watermark.relative = 0.8\n"
            "disk_free_limit.absolute = 50MB\n"
        )

    def start(self) -> None:
        """Launch the node (non-blocking); :meth:`wait_ready` waits for it."""
        if self.process is not None and self.process.poll() is None:
            raise RabbitNodeError(f"node {self.name} is already running")
        self.prepare()
        self.pid_file.unlink(missing_ok=True)
        out = (self.base / "log" / "stdout.log").open("ab")
        try:
            self.process = subprocess.Popen(  # noqa: S603 - fixed binary, own arguments
                [_binary("rabbitmq-server")],
                env=self.environment(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.base,
                start_new_session=True,  # its own process group: kill -9 takes all of it
            )
        finally:
            out.close()
        self.started_s.append(time.monotonic())

    def ctl(self, *args: str, timeout: float = 60.0, tool: str = "rabbitmqctl") -> str:
        """Run a CLI tool against this node only (``-n <own name>``, own cookie)."""
        command = [_binary(tool), "-q", "-n", self.name, *args]
        try:
            done = subprocess.run(  # noqa: S603 - fixed binary, own arguments
                command,
                env=self.environment(),
                capture_output=True,
                timeout=timeout,
                check=False,
                cwd=self.base,
            )
        except subprocess.TimeoutExpired as err:
            raise RabbitNodeError(f"{tool} {args[0]} on {self.name} timed out") from err
        if done.returncode != 0:
            message = (done.stderr or done.stdout).decode(errors="replace").strip()
            raise RabbitNodeError(f"{tool} {' '.join(args)} on {self.name}: {message[-400:]}")
        return done.stdout.decode(errors="replace")

    def wait_ready(self, *, timeout: float = 60.0) -> float:
        """Wait (bounded) until the node has booted; returns the seconds since :meth:`start`."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RabbitNodeError(f"node {self.name} exited: see {self.base / 'log'}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RabbitNodeError(f"node {self.name} not up in {timeout}s")
            if not self.pid_file.exists():
                # Written early in the boot; until then a CLI call (an Erlang VM) is wasted.
                time.sleep(0.1)
                continue
            try:
                # Fails at once while the node is not yet registered with epmd: retry then.
                self.ctl("await_startup", "--timeout", str(max(1, int(left))), timeout=left + 5)
            except RabbitNodeError:
                time.sleep(0.2)
                continue
            return time.monotonic() - (self.started_s[-1] if self.started_s else deadline)

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")

    def kill(self) -> None:
        """``kill -9`` of the node's whole process group, and wait for it to be gone."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        _kill_strays({self.name})
        self.process = None

    def stop(self, *, timeout: float = 30.0) -> None:
        """A clean stop, falling back to :meth:`kill`."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            _kill_strays({self.name})
            return
        with contextlib.suppress(RabbitNodeError):
            self.ctl("stop", timeout=timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        self.kill()

    def restart(self, *, timeout: float = 60.0) -> float:
        """Start a stopped or killed node again with the same data; returns its boot seconds."""
        self.start()
        return self.wait_ready(timeout=timeout)


def _environ_names(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for item in raw.split(b"\0"):
        if item.startswith(b"RABBITMQ_NODENAME="):
            return item.partition(b"=")[2].decode(errors="replace")
    return None


def _is_epmd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "epmd"
    except OSError:
        return False


def _kill_strays(names: set[str], *, epmd: bool = False) -> None:
    """SIGKILL processes whose environment names one of these nodes (ours only, by name).

    An epmd started by one of our nodes (none ran before) serves the others too: it goes only
    with the last of them (``epmd=True``).
    """
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        if not epmd and _is_epmd(int(entry.name)):
            continue
        if _environ_names(int(entry.name)) in names:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


@dataclass
class RabbitNodes:
    """The nodes of one drill; ``nodes[0]`` is the seed the others joined."""

    nodes: list[RabbitNode]
    folder: Path
    boot_seconds: float = 0.0

    def __getitem__(self, index: int) -> RabbitNode:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    def add_vhost(self, name: str) -> None:
        self.nodes[0].ctl("add_vhost", name)
        self.nodes[0].ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")

    def queue_leaders(self, vhost: str = "/") -> dict[str, str]:
        """Queue name -> node holding it (the leader of a quorum queue, the home of a classic)."""
        for node in self.nodes:
            if node.process is None:
                continue
            with contextlib.suppress(RabbitNodeError):
                out = node.ctl(
                    "list_queues", "-p", vhost, "name", "leader", "pid", "--no-table-headers"
                )
                leaders: dict[str, str] = {}
                for line in out.splitlines():
                    parts = line.split("\t")
                    if len(parts) == 3:
                        leader = parts[1] if "@" in parts[1] else _pid_node(parts[2])
                        leaders[parts[0]] = leader
                return leaders
        raise RabbitNodeError("no running node answered list_queues")

    def node_named(self, name: str) -> RabbitNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise RabbitNodeError(f"{name} is not one of this drill's nodes")


def _pid_node(pid: str) -> str:
    # A classic queue's pid prints as <node@host.creation.id.serial>.
    return pid.strip("<>").rsplit(".", 3)[0]


def _cookie_home(folder: Path) -> Path:
    home = folder / "home"
    home.mkdir()
    cookie = home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(20).upper())
    cookie.chmod(0o400)
    return home


@contextlib.contextmanager
def own_nodes(
    count: int = 1, *, timeout: float = 90.0, folder: Path | None = None
) -> Iterator[RabbitNodes]:
    """Start ``count`` nodes of one's own (clustered when more than one); remove all at the end.

    Nodes boot in parallel; the second and later join the first (``stop_app``,
    ``join_cluster``, ``start_app``). ``boot_seconds`` is the time until the cluster was up.
    """
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nl-rabbit-")))
        home = _cookie_home(folder)
        run = uuid.uuid4().hex[:12]
        nodes = [
            RabbitNode(
                name=f"nl-test-{run}-{n}@localhost",
                amqp_port=_free_port(),
                dist_port=_free_port(),
                base=folder / f"node{n}",
                home=home,
            )
            for n in range(count)
        ]
        names = {node.name for node in nodes}
        try:
            for node in nodes:
                node.start()
            for node in nodes:
                node.wait_ready(timeout=timeout)
            seed = nodes[0]
            for node in nodes[1:]:
                node.stop_app()
                node.ctl("join_cluster", seed.name, timeout=timeout)
                node.start_app()
                node.wait_ready(timeout=timeout)
            yield RabbitNodes(nodes=nodes, folder=folder, boot_seconds=time.monotonic() - started)
        finally:
            for node in nodes:
                node.kill()
            _kill_strays(names, epmd=True)
