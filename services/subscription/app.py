"""``create_app(settings)``: the subscription service's FastAPI app and its lifespan.

The lifespan opens, in an ``AsyncExitStack``, the database engine, a robust AMQP connection,
a confirming :class:`Publisher`, the HTTP client that forwards the archive's paths to the
renderer (:mod:`services.subscription.archive_proxy`) and the bounce feedback consumer,
declares the topology, and closes everything in reverse order on the way out.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from services.subscription.archive_proxy import ArchiveForwarder
from services.subscription.archive_proxy import router as archive_router
from services.subscription.body_limit import BodyLimitMiddleware
from services.subscription.components import Components
from services.subscription.feedback.consumer import FeedbackConsumer
from services.subscription.form_guard import CsrfGuard, TimeTrap
from services.subscription.group_commit import GroupCommit, OneByOne, SignupWriter
from services.subscription.link_tokens import LinkTokenReader
from services.subscription.liveness import LivenessServer
from services.subscription.mail_commands import TransactionalMail
from services.subscription.metrics import SubscriptionMetrics
from services.subscription.ops import login_routes, page_routes
from services.subscription.pages import Pages
from services.subscription.policy import SignupPolicy
from services.subscription.publication import Publication
from services.subscription.request_log import RequestLogMiddleware
from services.subscription.routes import admin_api, bounces, health, links, signup
from services.subscription.timing import ResponseFloor
from shared.db.engine import is_sqlite
from shared.links import Links
from shared.rate_limit import SlidingWindowLimiter
from shared.resources import Resources, open_resources
from shared.settings import Settings
from shared.tokens import TokenSigner

log = structlog.get_logger(__name__)

OPENAPI_TAGS = [
    {"name": "pages", "description": "Public HTML pages of the subscriber's journey."},
    {
        "name": "admin",
        "description": "Admin API. Every call needs `Authorization: Bearer "
        "<NEWSLETTER_ADMIN_TOKEN>`.",
    },
    {"name": "probes", "description": "Health, readiness and Prometheus metrics."},
]


# Connections per worker process: a rush of 200 concurrent signups queued for 20 connections
# (10 + 10 overflow) before; each signup holds one for a few milliseconds (the response floor
# is slept after the session is closed), so 20 + 20 keeps the queue short without starving
# the other services on a shared PostgreSQL (default max_connections 100).
DB_POOL_SIZE = 20


def per_worker_ip_limit(limit: int, workers: int) -> int:
    """Each worker's share of the per-IP limit, so that N workers together never allow more.

    The limiter lives in each process's memory; rounding down means a client spread over all
    workers gets at most ``limit`` posts per window (it may be refused a little earlier).
    """
    if limit <= 0 or workers <= 1:
        return limit
    share = limit // workers
    if share == 0:
        raise ValueError(
            f"NEWSLETTER_IP_LIMIT={limit} cannot be split over {workers} workers "
            "(raise the limit or run fewer workers)"
        )
    return share


def build_components(
    settings: Settings, *, policy: SignupPolicy, registry: CollectorRegistry, workers: int = 1
) -> Components:
    secret = settings.secret_key.get_secret_value()
    return Components(
        policy=policy,
        links=Links(public_url=settings.public_url, signer=TokenSigner(secret)),
        reader=LinkTokenReader(secret),
        csrf=CsrfGuard(secret),
        time_trap=TimeTrap(secret),
        ip_limiter=SlidingWindowLimiter(
            limit=per_worker_ip_limit(policy.ip_limit, workers), window_s=policy.ip_window_s
        ),
        floor=ResponseFloor(policy.response_floor_s),
        pages=Pages(
            csrf=CsrfGuard(secret),
            secure_cookies=settings.public_url.startswith("https://"),
            publication=Publication.from_settings(settings),
        ),
        metrics=SubscriptionMetrics.create(registry),
        ip_key=hashlib.sha256(b"newsletter.ip:" + secret.encode()).digest(),
        reader_analytics=settings.per_reader_analytics,
    )


def _signup_writer(settings: Settings, policy: SignupPolicy, resources: Resources) -> SignupWriter:
    """Group commit on PostgreSQL (a rush shares transactions), one by one on SQLite."""
    interval = policy.confirmation_interval_s
    if policy.signup_group_commit and not is_sqlite(settings.database_url):
        return GroupCommit(
            engine=resources.engine, sessions=resources.sessions, confirmation_interval_s=interval
        )
    return OneByOne(sessions=resources.sessions, confirmation_interval_s=interval)


def create_app(
    settings: Settings,
    *,
    policy: SignupPolicy | None = None,
    registry: CollectorRegistry | None = None,
    workers: int = 1,
) -> FastAPI:
    """The app; ``registry`` defaults to a private one (the CLI passes the process default).

    ``workers`` is how many processes serve the same socket (``serve --workers``): the
    per-process IP limiter gets its share of the limit.
    """
    metrics_registry = registry if registry is not None else CollectorRegistry()
    components = build_components(
        settings, policy=policy or SignupPolicy(), registry=metrics_registry, workers=workers
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            resources = await open_resources(
                stack,
                database_url=settings.database_url,
                amqp_url=settings.amqp_url,
                pool_size=DB_POOL_SIZE,
            )
            sessions = resources.sessions
            connection, publisher = resources.connection, resources.publisher
            app.state.settings = settings
            app.state.sessions = sessions
            app.state.connection = connection
            app.state.publisher = publisher
            app.state.registry = metrics_registry
            app.state.components = components
            app.state.mail = TransactionalMail(
                links=components.links, publisher=publisher, public_url=settings.public_url
            )
            app.state.signups = _signup_writer(settings, components.policy, resources)
            if isinstance(app.state.signups, GroupCommit):
                app.state.signups.start()
                stack.push_async_callback(app.state.signups.stop)
            # The archive's paths go on to the renderer: readers see one origin.
            archive_client = await stack.enter_async_context(ArchiveForwarder.client_for(settings))
            app.state.archive = ArchiveForwarder(archive_client)
            feedback = await FeedbackConsumer.start(
                connection=connection, sessions=sessions, publisher=publisher
            )
            stack.push_async_callback(feedback.stop)
            if settings.subscription_health_port:
                liveness = LivenessServer(
                    host=settings.http_host, port=settings.subscription_health_port
                )
                liveness.start()
                stack.callback(liveness.stop)
            log.info("subscription_started")
            yield
        log.info("subscription_stopped")

    app = FastAPI(
        title="Newsletter subscription service",
        description=(
            "Signup form, double opt-in, unsubscribe (with RFC 8058 one-click), preferences, "
            "and the admin API (`/api/...`, bearer `NEWSLETTER_ADMIN_TOKEN`)."
        ),
        version="1.0",
        lifespan=lifespan,
        openapi_tags=OPENAPI_TAGS,
    )
    # No automatic trailing-slash redirects: the app never answers with a Location header it
    # did not build itself from its own paths.
    app.router.redirect_slashes = False
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestLogMiddleware)
    app.state.settings = settings
    app.state.components = components
    app.state.registry = metrics_registry
    app.include_router(health.router)
    app.include_router(signup.router)
    app.include_router(links.router)
    app.include_router(admin_api.router)
    app.include_router(page_routes.router)
    app.include_router(login_routes.router)
    app.include_router(bounces.router)
    app.include_router(archive_router)  # last: the archive's paths, forwarded to the renderer
    _install_error_pages(app)
    return app


# Collections of the young generations: every 20,000 allocations instead of 700. A rush keeps
# thousands of objects alive in its 200 requests in flight; at 700 the collector traversed
# them ten times a second (5-9 ms each, nothing freed) and a full pass followed every second.
GC_THRESHOLDS = (20_000, 20, 50)


def freeze_startup_heap() -> None:
    """Keep the garbage collector's passes off the objects that live as long as the process
    (modules, the app, templates, metadata: about a million of them). Called by the serving
    process once its app is built (``cli.worker_app``), not by ``create_app``: a test process
    builds many apps, and would keep every one of them for good.

    Under a rush a full collection ran about once a second and traversed all of them, 110-140
    ms each with the event loop stopped: ``/healthz`` and every signup waited behind it.
    Frozen objects are never traversed again; what requests allocate is collected as before.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _install_error_pages(app: FastAPI) -> None:
    """Hostile or broken requests get a clear 4xx, and no stack trace ever gets out."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> Response:
        fields = [".".join(str(p) for p in e.get("loc", ())) for e in err.errors()][:10]
        return JSONResponse({"detail": "invalid request", "fields": fields}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        return JSONResponse(
            {"detail": err.detail}, status_code=err.status_code, headers=err.headers
        )

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, err: ClientDisconnect) -> Response:
        log.info("client_disconnected", path=request.url.path)
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> Response:
        log.exception("request_failed", path=request.url.path, error=type(err).__name__)
        return JSONResponse({"detail": "internal error"}, status_code=500)
