"""The ``newsletter`` command: each service's commands mounted under one console script.

This is the only module that sees every service; it wires their Typer apps together and
imports nothing else from them.
"""

from __future__ import annotations

import typer

from benchmarks import cli as bench_cli
from benchmarks.faults import cli as faults_cli
from newsletter_cli import db, demo, queues, report, settings_doc, sink
from services.bounces import cli as bounces_cli
from services.dispatcher import cli as dispatcher_cli
from services.renderer import cli as renderer_cli
from services.subscription import cli as subscription_cli

app = typer.Typer(
    help="Multilingual newsletter suite: signup, rendering and delivery around RabbitMQ.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(subscription_cli.app, name="subscription")
app.add_typer(renderer_cli.app, name="renderer")
app.add_typer(renderer_cli.issue_app, name="issue")
app.add_typer(dispatcher_cli.app, name="dispatcher")
app.add_typer(dispatcher_cli.send_app, name="send")
app.add_typer(dispatcher_cli.dlq_app, name="dlq")
app.add_typer(db.app, name="db")
app.add_typer(bounces_cli.app, name="bounces")
app.add_typer(report.app, name="report")
app.command(name="demo")(demo.demo)
app.command(name="queues")(queues.queues)
app.command(name="sink")(sink.sink)
app.command(name="settings-doc")(settings_doc.settings_doc)

bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)
bench_app.command(name="render")(bench_cli.bench_render)
bench_app.command(name="dispatch")(bench_cli.bench_dispatch)
bench_app.command(name="capacity")(bench_cli.bench_capacity)
bench_app.command(name="feedback")(bench_cli.bench_feedback)
bench_app.command(name="clicks")(bench_cli.bench_clicks)
bench_app.command(name="signups")(bench_cli.bench_signups)
bench_app.command(name="faults")(faults_cli.bench_faults)
app.add_typer(bench_app, name="bench")

if __name__ == "__main__":
    app()
