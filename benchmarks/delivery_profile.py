"""CPU per message of the dispatcher's delivery path, in one process: ``python -m
benchmarks.delivery_profile``.

Not a throughput benchmark: it counts CPU seconds, not wall time, so a loaded machine changes
its figures far less than it changes ``bench dispatch``'s rates. Two measurements per variant
(unsigned, RSA-2048, Ed25519), on the ~33 KB editions of ``bench dispatch`` (en/be/ru):

* ``steps``: each step of one delivery timed alone in a loop (``time.thread_time``): the
  recipient's values (signed links, VERP, Message-ID), filling the template, the DKIM
  signature, the canonical log line (JSON to a file, as the service logs).
* ``loop``: the composing, signing, SMTP and logging part of ``DeliveryWorker`` for N
  deliveries on 16 pooled connections to the benchmark's sink (another process, not counted),
  as the worker does it (``Composer.compose``: an RSA signature made by the signing process):
  CPU of the event-loop thread (what limits one dispatcher's rate), of the whole process, of
  the signing process, and of both together (what costs cores), per message.

The broker (aio-pika consuming, acks) and the ledger (claims and outcome commits in
PostgreSQL) are not in this loop: they need their servers. ``bench dispatch`` measures the
whole process; ``NEWSLETTER_BENCH_PROFILE=FILE`` there writes a cProfile of it.

Each of ``--rounds`` rounds runs every variant once, in turn; the figures are the medians.
``--profile`` adds a cProfile of the event-loop thread (its CPU time as the clock), sorted by
own time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import logging
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from benchmarks import audience
from benchmarks.dispatch import _dkim_key, _free_port
from services.dispatcher import mime
from services.dispatcher.composer import Composer, Recipient
from services.dispatcher.delivery_log import DeliveryLog
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.smtp import SmtpPool
from shared.logging import configure_logging
from shared.settings import SmtpTarget

SECRET = "profile-secret-key-" + "x" * 40
VARIANTS = ("unsigned", "rsa", "ed25519")
CONNECTIONS = 16


@contextlib.contextmanager
def _sink() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "benchmarks.smtp_sink", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # "ready"
        yield f"smtp://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def _composer(variant: str, folder: Path) -> Composer:
    key = None if variant == "unsigned" else _dkim_key(folder, variant)
    settings = DispatcherSettings(
        mode="test", secret_key=SECRET, dkim_private_key_path=key, dkim_domain="example.org"
    )
    return Composer(settings=settings)


def _templates(composer: Composer) -> list[mime.MessageTemplate]:
    built = []
    for language in audience.LANGUAGES:
        subject, html, text = audience.edition(language)
        envelope = composer.envelope(subject=subject, language=language, campaign="profile")
        built.append(mime.build_template(envelope=envelope, text=text, html_body=html))
    return built


def _recipient(n: int) -> Recipient:
    return Recipient(n, n, f"reader{n}@example.org", f"d{n}.profile0")


def _per_call_ms(step: Callable[[int], object], count: int) -> float:
    started = time.thread_time()
    for n in range(count):
        step(n)
    return (time.thread_time() - started) * 1000 / count


def steps(
    composer: Composer, templates: list[mime.MessageTemplate], count: int
) -> dict[str, float]:
    """Milliseconds of CPU per call of each step, each timed alone (signing inline)."""
    log = DeliveryLog("services.dispatcher.worker")
    values = [composer.values(_recipient(n)) for n in range(len(templates))]
    figures = {
        "values": _per_call_ms(lambda n: composer.values(_recipient(n)), count),
        "message_id": _per_call_ms(lambda n: composer.message_id(f"d{n}.profile0"), count),
        "return_path": _per_call_ms(composer.return_path, count),
        "fill": _per_call_ms(lambda n: templates[n % 3].render(values[n % 3]), count),
        "fill_and_sign": _per_call_ms(
            lambda n: composer.render(templates[n % 3], values[n % 3]), count
        ),
        "log_line": _per_call_ms(
            lambda n: log.outcome(
                "email_sent",
                to=f"reader{n}@example.org",
                delivery_id=n,
                send_id="0" * 36,
                language="ru",
                smtp_code=250,
                reply="",
                attempt=1,
                tier=None,
            ),
            count,
        ),
    }
    figures["sign"] = figures["fill_and_sign"] - figures["fill"]
    return {name: round(ms, 4) for name, ms in figures.items()}


async def loop(
    composer: Composer, templates: list[mime.MessageTemplate], smtp_url: str, count: int
) -> dict[str, float]:
    """CPU per message of compose + sign + SMTP + log for ``count`` deliveries."""
    pool = SmtpPool(target=SmtpTarget(smtp_url), size=CONNECTIONS, timeout=30)
    log = DeliveryLog("services.dispatcher.worker")
    numbers = iter(range(count))
    refused: list[str] = []

    async def worker() -> None:
        for n in numbers:
            template = templates[n % 3]
            recipient = _recipient(n)
            values = composer.values(recipient)
            data = await composer.compose(template, values)
            outcome = await pool.send(
                sender=composer.return_path(n),
                recipient=recipient.address,
                data=data,
                dot_safe=template.dot_safe,
            )
            if outcome.status != "sent":
                refused.append(f"{outcome.status} {outcome.code} {outcome.reply}")
            log.outcome(
                "email_sent",
                to=recipient.address,
                delivery_id=n,
                send_id="0" * 36,
                language="ru",
                smtp_code=outcome.code,
                reply="",
                attempt=1,
                tier=None,
            )

    # Connections first, outside the count: the dispatcher keeps them open; and the signing
    # process, started by the first signature.
    warm = iter(range(count, count + CONNECTIONS))
    await asyncio.gather(
        *(
            pool.send(sender="w@example.org", recipient=f"w{n}@example.org", data=b"x\r\n")
            for n in warm
        ),
        composer.compose(templates[0], composer.values(_recipient(count))),
    )
    signing = [psutil.Process(pid) for pid in composer.signing_pids]
    signing0 = sum(_cpu_seconds(p) for p in signing)
    thread0, process0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    finally:
        await pool.close()
    thread, process, wall = (
        time.thread_time() - thread0,
        time.process_time() - process0,
        time.perf_counter() - wall0,
    )
    child = sum(_cpu_seconds(p) for p in signing) - signing0
    composer.close()
    if refused:
        raise RuntimeError(f"{len(refused)} not sent, first: {refused[0]}")
    return {
        "loop_thread_cpu_ms_per_msg": round(thread * 1000 / count, 4),
        "process_cpu_ms_per_msg": round(process * 1000 / count, 4),
        "signing_process_cpu_ms_per_msg": round(child * 1000 / count, 4),
        "total_cpu_ms_per_msg": round((process + child) * 1000 / count, 4),
        "wall_msgs_per_s": round(count / wall, 1),
    }


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _profile_text(profile: cProfile.Profile, lines: int) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(lines)
    return out.getvalue()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return round((ordered[middle - 1] + ordered[middle]) / 2, 4)


def run(*, count: int, variants: tuple[str, ...], rounds: int, profile: bool) -> dict[str, Any]:
    """Each round runs every variant once, in turn (a load that drifts favours none); the
    figures are the medians over the rounds, each round's figures listed after them."""
    import uvloop

    figures: dict[str, Any] = {"messages": count, "rounds": rounds}
    loops: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    step_runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp, _sink() as smtp_url:
        # The service's logging: JSON lines, INFO, to a file (here a throw-away one).
        log_file = (Path(tmp) / "dispatcher.log").open("w")
        configure_logging(service="dispatcher", level="INFO", fmt="json")
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(log_file)
        profiles: dict[str, cProfile.Profile] = {}
        for _ in range(rounds):
            for variant in variants:
                composer = _composer(variant, Path(tmp))
                templates = _templates(composer)
                step_runs[variant].append(steps(composer, templates, min(count, 3000)))
                profiler = profiles.setdefault(variant, cProfile.Profile(time.thread_time))
                if profile:
                    profiler.enable()
                try:
                    loops[variant].append(uvloop.run(loop(composer, templates, smtp_url, count)))
                finally:
                    composer.close()
                    if profile:
                        profiler.disable()
        log_file.close()
    for variant in variants:
        result: dict[str, Any] = {
            "loop": {
                name: _median([run[name] for run in loops[variant]]) for name in loops[variant][0]
            },
            "steps": {
                name: _median([run[name] for run in step_runs[variant]])
                for name in step_runs[variant][0]
            },
            "loop_runs": loops[variant],
        }
        if profile:
            result["profile"] = _profile_text(profiles[variant], 30)
        figures[variant] = result
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    variants = tuple(v for v in args.variants.split(",") if v)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    figures = run(count=args.messages, variants=variants, rounds=args.rounds, profile=args.profile)
    for variant in variants:
        text = figures[variant].pop("profile", None)
        if text:
            print(f"--- cProfile, {variant} ---\n{text}", file=sys.stderr)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
