"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from app.deps import ServicesDep, bearer, get_principal
from app.errors import ApiError
from app.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers",
            responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}})
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the pipeline codes a canned note",
    responses={
        200: {"content": {"application/json": {"example": {"status": "ready", "model_version": "minilm-...",
                                                             "codeset_versions": {"icd10cm": "FY2026-04"}}}}},
        503: {"description": "Still loading, or the canned note failed (error shape, code not_ready)"},
    },
)
def readyz(request: Request) -> JSONResponse:
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise ApiError("not_ready", "the service is starting; retry shortly")
    if not services.coder.check_ready():
        raise ApiError("not_ready", services.coder.ready_error or "the pipeline is not ready")
    pipeline = services.runtime.pipeline
    return JSONResponse({
        "status": "ready",
        "model_version": getattr(pipeline, "model_version", ""),
        "rules_version": getattr(pipeline, "rules_version", ""),
        "codeset_versions": {v.system: v.version for v in services.runtime.codebooks.versions()},
    })


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format); needs an admin key unless metrics_public is set",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"example": "notecoder_http_requests_total{...} 1.0\n"}}}},
)
def metrics(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Response:
    if not services.settings.metrics_public:
        principal = get_principal(services, credentials)
        if not principal.may("admin"):
            raise ApiError("forbidden", "metrics need an admin key (or NOTECODER_METRICS_PUBLIC=true)")
    return Response(services.metrics.render(), media_type=CONTENT_TYPE)
