"""The FastAPI application: `create_app(settings)` wires routes, errors, metrics and the lifespan that
builds the runtime (engine, code sets, pipeline, model) once per process.

`notecoder serve` runs `app.main:create_app_from_env` as a uvicorn factory, so every worker builds its
own runtime from the environment.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deps import RuntimeLike, Services
from app.errors import error_payload, install_error_handlers
from app.metrics import Metrics
from app.notes import NoteStore
from app.services.coding import Coder
from app.services.fhir import FHIR_JSON, operation_outcome
from app.services.review import ReviewService
from app.services.storage import migrate_app
from app.services.validation import Validator
from app.settings import Settings

log = logging.getLogger("notecoder.api")
access_log = logging.getLogger("notecoder.access")

API_DESCRIPTION = """
Clinical note to ICD-10-CM and CPT code suggestions with evidence spans, claim-style validation, coder review
and a hash-chained audit log. Fully offline.

**Auth**: every route but `/healthz` and `/readyz` needs `Authorization: Bearer <key>` (`notecoder apikey create`).
Roles: `ehr` may suggest, validate and look up codes; `coder` may also review; `admin` may also manage keys, code
sets and read `/metrics`.

**Errors**: `{"error": {"code", "message", "request_id"}}` with a stable `code` (4xx for bad input, never 5xx);
under `/fhir/` a FHIR OperationOutcome carrying the same code. Every answer has an `X-Request-ID` header.
"""


class BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    """Request id, body-size limit, access log and metrics for every request; the last guard against
    unexpected exceptions (answered as a JSON 500 without a traceback and logged without request data)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge
            return message

        declared = _content_length(scope)
        try:
            if declared is not None and declared > self.max_body_bytes:
                raise BodyTooLarge
            await self.app(scope, receive_wrapper, send_wrapper)
        except BodyTooLarge:
            if not response_started:
                await self._error(scope, send_wrapper, 413, "body_too_large",
                                  f"the body exceeds {self.max_body_bytes} bytes; split the note or use the "
                                  "`notecoder batch` command", request_id)
        except Exception as exc:  # noqa: BLE001 - the outermost guard: answer JSON, never a traceback page
            log.error("unhandled %s on %s %s request_id=%s\n%s", type(exc).__name__, scope.get("method"),
                      _route_of(scope), request_id, "".join(traceback.format_tb(exc.__traceback__)))
            if not response_started:
                await self._error(scope, send_wrapper, 500, "internal_error",
                                  "internal error; report the request_id", request_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_of(scope)
            self.metrics.observe_request(scope.get("method", ""), route, status, elapsed)
            access_log.info("%s %s %d %.1fms request_id=%s", scope.get("method"), route, status,
                            elapsed * 1000, request_id)

    @staticmethod
    async def _error(scope: Scope, send: Send, status: int, code: str, message: str, request_id: str) -> None:
        if str(scope.get("path", "")).startswith("/fhir/"):
            body = JSONResponse(operation_outcome(code, message, request_id), status_code=status,
                                media_type=FHIR_JSON)
        else:
            body = JSONResponse(error_payload(code, message, request_id), status_code=status)

        async def empty_receive() -> Message:
            return {"type": "http.disconnect"}

        await body(scope, empty_receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _route_of(scope: Scope) -> str:
    # The route template, never the raw path: paths carry request ids and codes (unbounded label values).
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


def _fhir_error_renderer(request: Request, code: str, message: str, status: int) -> JSONResponse | None:
    if not request.url.path.startswith("/fhir/"):
        return None
    rid = getattr(request.state, "request_id", None)
    return JSONResponse(operation_outcome(code, message, rid), status_code=status, media_type=FHIR_JSON)


def configure_logging(level: str) -> None:
    """Our loggers write one line per event; request bodies and note text are never logged."""
    root = logging.getLogger("notecoder")
    root.setLevel(level)
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
        root.propagate = False


def build_services(settings: Settings, runtime: RuntimeLike, metrics: Metrics) -> Services:
    """Everything the routes need, built once: app tables migrated, note store, coder, reviews, validator."""
    migrate_app(runtime.engine)
    notes = NoteStore(settings.encryption_key, settings.note_retention_days)
    coder = Coder(settings, runtime, notes, metrics)
    return Services(
        settings=settings, runtime=runtime, metrics=metrics, notes=notes, coder=coder,
        reviews=ReviewService(runtime, metrics), validator=Validator(runtime.codebooks),
    )


def create_app(settings: Settings | None = None, runtime: RuntimeLike | None = None,
               runtime_factory: Callable[[Settings], RuntimeLike] | None = None) -> FastAPI:
    """The application. Without `runtime`, the lifespan builds one with `app.runtime.build_runtime`
    (or `runtime_factory`) and disposes of it at shutdown."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        if runtime is not None:
            rt = runtime
        else:
            factory = runtime_factory
            if factory is None:
                from app.runtime import build_runtime

                factory = build_runtime
            rt = factory(settings)
        started = time.perf_counter()
        services = build_services(settings, rt, metrics)
        app.state.services = services
        if services.coder.check_ready():
            log.info("ready in %.1f s", time.perf_counter() - started)
        else:
            log.warning("not ready: %s", services.coder.ready_error)
        try:
            yield
        finally:
            app.state.services = None
            if owned:
                rt.engine.dispose()

    app = FastAPI(
        title="notecoder",
        version=_version(),
        description=API_DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "coding", "description": "Code suggestions for one note"},
            {"name": "review", "description": "Coder decisions on suggestions"},
            {"name": "validation", "description": "Claim-style checks on a code list"},
            {"name": "codes", "description": "Code-set look-up and search"},
            {"name": "fhir", "description": "FHIR R4 operations"},
            {"name": "admin", "description": "Keys and code sets"},
            {"name": "health", "description": "Liveness, readiness, metrics"},
        ],
    )
    app.state.settings = settings
    app.state.services = None
    app.state.error_renderer = _fhir_error_renderer
    install_error_handlers(app)

    from app.routes import admin, codes, fhir, health, review, suggest, validate

    for module in (health, suggest, review, validate, codes, fhir, admin):
        app.include_router(module.router)
    from app.ui import routes as ui_routes

    ui_routes.install(app, settings)
    # Room for the JSON wrapping of a note of max_note_chars characters (up to 4 UTF-8 bytes or a 6-byte escape).
    app.add_middleware(RequestContextMiddleware, metrics=metrics,
                       max_body_bytes=settings.max_note_chars * 6 + 64 * 1024)
    return app


def create_app_from_env() -> FastAPI:
    """Uvicorn factory for `notecoder serve`: settings from the environment."""
    return create_app(Settings())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("notecoder")
    except PackageNotFoundError:
        return "0.0.0"


__all__ = ["create_app", "create_app_from_env"]
