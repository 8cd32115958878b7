"""Dependencies injected into routes: settings, a database session, the coding service, the caller.

Everything here reads what the lifespan built once (`app.state.services`); nothing is created per request
except the session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.auth import Principal, verify_api_key
from app.errors import ApiError
from app.metrics import Metrics
from app.notes import NoteStore
from app.settings import Settings
from nlp.types import CodingRequest, CodingResult

if TYPE_CHECKING:
    from app.services.coding import Coder
    from app.services.review import ReviewService
    from app.services.validation import Validator
    from codebooks.repository import CodebookRepository


class PipelineLike(Protocol):
    model_version: str
    rules_version: str

    def code(self, request: CodingRequest) -> CodingResult: ...


class RuntimeLike(Protocol):
    """What `app.runtime.build_runtime(settings)` returns: built once per process."""

    engine: Engine
    sessions: sessionmaker[Session]
    codebooks: CodebookRepository
    pipeline: PipelineLike


@dataclass
class Services:
    """Everything the routes use, built once in the lifespan."""

    settings: Settings
    runtime: RuntimeLike
    metrics: Metrics
    notes: NoteStore
    coder: Coder
    reviews: ReviewService
    validator: Validator
    extra: dict[str, Any] = field(default_factory=dict)


def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise ApiError("not_ready", "the service is starting; retry shortly")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_session(services: ServicesDep) -> Iterator[Session]:
    with services.runtime.sessions() as session:
        yield session


def get_coder(services: ServicesDep) -> Coder:
    return services.coder


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
CoderDep = Annotated["Coder", Depends(get_coder)]

bearer = HTTPBearer(auto_error=False, description="An API key made with `notecoder apikey create`")


def get_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise ApiError("unauthorized", "send an API key as `Authorization: Bearer <key>`")
    with services.runtime.sessions() as session:
        principal = verify_api_key(session, credentials.credentials)
    if principal is None:
        raise ApiError("unauthorized", "the API key is unknown, malformed or revoked")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_role(role: str) -> Callable[[Principal], Principal]:
    """A dependency that lets through principals of `role` or a higher one (ehr < coder < admin)."""

    def check(principal: PrincipalDep) -> Principal:
        if not principal.may(role):
            raise ApiError("forbidden", f"this route needs the {role} role or higher; the key has {principal.role}")
        return principal

    return check


EhrDep = Annotated[Principal, Depends(require_role("ehr"))]
ReviewerDep = Annotated[Principal, Depends(require_role("coder"))]
AdminDep = Annotated[Principal, Depends(require_role("admin"))]


def request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    assert rid, "the request-id middleware runs before every route"
    return str(rid)


RequestIdDep = Annotated[str, Depends(request_id)]
