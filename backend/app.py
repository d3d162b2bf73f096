"""The Starlette application: /graphql (HTTP and WebSocket), /healthz, /readyz, the PWA at /."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from backend.auth import policy
from backend.auth import service as auth_service
from backend.compiled.metrics import METRICS
from backend.db import Database
from backend.events import create_broadcast
from backend.gql import Context, Services
from backend.graphql import build_schema
from backend.jobs import JobContext, JobQueue, create_job_queue
from backend.limits import BodySizeLimit
from backend.principal import Principal
from backend.quality import batch_record as batch_records
from backend.settings import Settings, get_settings

log = logging.getLogger(__name__)

PWA_DIST = Path(__file__).resolve().parent.parent / "pwa" / "dist"
STATIC = Path(__file__).resolve().parent / "static"


def _bearer(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _dumps(data: object) -> bytes:
    try:
        return orjson.dumps(data)
    except TypeError:  # what orjson refuses (an integer beyond 64 bits, say): as before
        return json.dumps(data, separators=(",", ":")).encode()


class MesGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context: the services and the signed-in principal.

    JSON goes through orjson both ways: a compiled read's data (an `orjson.Fragment` of
    PostgreSQL's bytes, backend/compiled) is written into the response as it is. Responses
    are compact, with non-ASCII text as UTF-8 (not \\u-escaped), as PostgreSQL prints it.
    """

    def decode_json(self, data: str | bytes) -> object:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:  # what orjson refuses (NaN, huge integers): as before
            return json.loads(data)

    def encode_json(self, data: object) -> str:
        # WebSocket messages must be text frames: str here; HTTP bodies use `_dumps` directly.
        return _dumps(data).decode()

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        response = Response(_dumps(response_data), media_type="application/json")
        response.headers.raw.extend(sub_response.headers.raw)
        if sub_response.background:
            response.background = sub_response.background
        if sub_response.status_code:
            response.status_code = sub_response.status_code
        return response

    async def _principal(self, services: Services, token: str | None) -> Principal | None:
        if token is None:
            return None
        return await services.principals.authenticate(services.db, services.settings, token)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        services: Services = request.app.state.services
        principal = None
        if isinstance(request, Request):
            principal = await self._principal(
                services, _bearer(request.headers.get("authorization"))
            )
        return Context(services=services, principal=principal, request=request, response=response)

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        """`connection_init` must carry {"authorization": "Bearer TOKEN"}; otherwise close 4403."""
        params = context.connection_params or {}
        token = _bearer(params.get("authorization") or params.get("Authorization"))
        context.principal = await self._principal(context.services, token)
        context.token = token
        if context.principal is None:
            raise ConnectionRejectionError({"reason": "sign in: a valid token is required"})
        return None


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics(_: Request) -> Response:
    """Prometheus text: GraphQL reads by the path that served them, compiled-read fallbacks
    by reason (backend/compiled)."""
    return PlainTextResponse(METRICS.render(), media_type="text/plain; version=0.0.4")


async def readyz(request: Request) -> Response:
    services: Services = request.app.state.services
    checks: dict[str, str] = {}
    try:
        async with services.db.read() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:  # any failure means "not ready", with the reason
        checks["database"] = f"failed: {type(error).__name__}"
    if services.settings.redis_url:
        checks["redis"] = "ok" if await services.broadcast.ping() else "failed"
        if not request.app.state.jobs_started.is_set():
            checks["jobs"] = "waiting for Redis"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)


# A report may hold the token in its URL (?token=): keep it out of Referer headers and caches;
# the page carries no script, so forbid any that an escaping slip could let in.
_REPORT_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s]*")


class RedactQueryTokens(logging.Filter):
    """Keeps the tokens of reports opened as `?token=…` out of the server's access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


async def batch_record(request: Request) -> Response:
    """`GET /orders/{number}/batch-record` (HTML, printable) and `….json` (the same data).

    The token comes as for /graphql, in `Authorization: Bearer TOKEN`, or, so that a browser
    tab can open and print the record, as `?token=TOKEN` (prefer the header: a URL stays in
    the browser's history; the access log shows it redacted). Roles:
    `policy.REPORTS["batchRecord"]`. No or an invalid token is 401, another role 403, an
    unknown order 404.
    """
    as_json = request.url.path.endswith(".json")

    def refuse(status: int, message: str) -> Response:
        headers = dict(_REPORT_HEADERS)
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="mes"'
        if as_json:
            return JSONResponse({"error": message}, status_code=status, headers=headers)
        return Response(
            message + "\n", status_code=status, headers=headers, media_type="text/plain"
        )

    services: Services = request.app.state.services
    token = _bearer(request.headers.get("authorization")) or request.query_params.get("token")
    if not token:
        return refuse(401, "sign in: send 'Authorization: Bearer <token>' or add ?token=<token>")
    number = request.path_params["number"]
    async with services.db.read() as session:
        principal = await auth_service.authenticate(session, services.settings, token)
        if principal is None:
            return refuse(401, "the token is invalid or has expired: sign in again")
        if not principal.has_any(policy.REPORTS["batchRecord"]):
            return refuse(403, "your roles do not allow reading batch records")
        record = await batch_records.build(
            session,
            number,
            gs_stand_ins=services.settings.gs_stand_ins,
            generated_by=principal.name,
        )
    if record is None:
        return refuse(404, f"no production order {number.strip()!r}")
    if as_json:
        return JSONResponse(record, headers=_REPORT_HEADERS)
    return HTMLResponse(
        batch_records.render_html(record),
        headers={**_REPORT_HEADERS, "Content-Security-Policy": _REPORT_CSP},
    )


JOB_QUEUE_RETRY_SECONDS = (1.0, 30.0)
"""First and longest pause between attempts to connect the job queue to Redis."""


async def _start_jobs_when_redis_answers(jobs: JobQueue, started: asyncio.Event) -> None:
    """Connects the job queue, retrying until Redis answers (the API serves meanwhile)."""
    delay, longest = JOB_QUEUE_RETRY_SECONDS
    while True:
        try:
            await jobs.start()
        except Exception as error:  # Redis down or refusing: /readyz says 503 meanwhile
            log.warning(
                "the job queue cannot reach Redis (%s); retrying in %.0f s",
                str(error).splitlines()[0] if str(error) else type(error).__name__,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)
        else:
            started.set()
            log.info("the job queue is connected to Redis")
            return


class PwaFiles(StaticFiles):
    """The built PWA. Vite names what is under /assets by content hash: cached for a year;
    everything else (index.html, sw.js, the manifest) is checked on each load so a new version
    is seen (the service worker serves the app offline, not the HTTP cache)."""

    def file_response(
        self, full_path: Any, stat_result: Any, scope: Any, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        immutable = str(scope.get("path", "")).startswith("/assets/")
        response.headers["cache-control"] = (
            "public, max-age=31536000, immutable" if immutable else "no-cache"
        )
        return response


def pwa_files() -> Any:
    """The PWA's files, gzipped on the way out (the shell is text; slow networks matter)."""
    return GZipMiddleware(PwaFiles(directory=PWA_DIST, html=True), minimum_size=512)


async def pwa_index(_: Request) -> Response:
    index = PWA_DIST / "index.html"
    return FileResponse(index if index.exists() else STATIC / "index.html")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    settings.require_secret_key()
    schema = build_schema(settings)
    access_log = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueryTokens) for f in access_log.filters):
        access_log.addFilter(RedactQueryTokens())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Large GraphQL responses allocate many small objects; the default thresholds make
        # the collector run so often that it halves throughput under concurrency.
        gc.set_threshold(100_000, 50, 100)
        db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        broadcast = create_broadcast(settings.redis_url, settings.event_channel_prefix)
        jobs = create_job_queue(
            settings.redis_url,
            JobContext(db=db, broadcast=broadcast),
            schedule=settings.run_scheduled_jobs,
        )
        app.state.services = Services(settings=settings, db=db, broadcast=broadcast, jobs=jobs)
        app.state.jobs_started = started = asyncio.Event()
        starter: asyncio.Task[None] | None = None
        if settings.redis_url and not await broadcast.ping():
            # A process that will not start while Redis is down cannot say so: serve, answer
            # 503 on /readyz, and connect the job queue once Redis is back.
            log.warning("Redis does not answer: serving, but not ready until it does")
            starter = asyncio.create_task(_start_jobs_when_redis_answers(jobs, started))
        else:
            await jobs.start()
            started.set()
        try:
            yield
        finally:
            if starter is not None:
                starter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starter
            await jobs.close()
            await broadcast.close()
            await db.dispose()

    view = MesGraphQL(
        schema,
        graphql_ide="graphiql" if settings.graphiql else None,
        subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
        max_subscriptions_per_connection=50,
        allowed_origins=settings.allowed_origins,
    )
    routes: list[Any] = [
        Route("/graphql", view, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", view),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/orders/{number}/batch-record", batch_record, methods=["GET"]),
        Route("/orders/{number}/batch-record.json", batch_record, methods=["GET"]),
    ]
    if PWA_DIST.is_dir():
        routes.append(Mount("/", pwa_files(), name="pwa"))
    else:
        routes.append(Route("/", pwa_index))
    return Starlette(
        routes=routes,
        middleware=[Middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes)],
        lifespan=lifespan,
    )


def app_factory() -> Starlette:
    """For `uvicorn --factory backend.app:app_factory` (what `mes serve` runs)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return create_app()
