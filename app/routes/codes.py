"""Code look-up and search: `GET /v1/codes/{system}/{code}`, `GET /v1/codes/{system}?q=`."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.deps import EhrDep, ServicesDep
from app.errors import ApiError
from app.routes.common import error_responses
from app.schemas import CodeDetailOut, SearchHitOut, SearchResponse, check_date_of_service
from codebooks.repository import LOOKUP_SYSTEMS

router = APIRouter(prefix="/v1/codes", tags=["codes"])

SystemPath = Annotated[str, Path(min_length=1, max_length=16, description="icd10cm, cpt or hcpcs",
                                 examples=["icd10cm"])]


def check_system(system: str) -> None:
    if system not in LOOKUP_SYSTEMS:
        raise ApiError("unknown_code_system", f"unknown code system {system!r}; use one of {', '.join(LOOKUP_SYSTEMS)}")


@router.get("/{system}/{code}", response_model=CodeDetailOut, summary="One code with its hierarchy and notes",
            responses=error_responses(401, 403, 404, 422))
def lookup(
    system: SystemPath,
    code: Annotated[str, Path(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9.\-]+$", examples=["E11.9"])],
    services: ServicesDep,
    principal: EhrDep,
    date: Annotated[dt.date | None, Query(description="Use the version in force on this date")] = None,
) -> CodeDetailOut:
    check_system(system)
    try:
        check_date_of_service(date)
    except ValueError as exc:
        raise ApiError("invalid_request", f"date: {exc}") from exc
    detail = services.runtime.codebooks.lookup(system, code, on=date)
    data = dataclasses.asdict(detail)
    data["terms"] = [{"source": s, "text": t} for s, t in detail.terms]
    data["instructions"] = {k: list(v) for k, v in detail.instructions.items()}
    data["children"] = list(detail.children)
    return CodeDetailOut(**data)


@router.get("/{system}", response_model=SearchResponse, summary="Search codes by words or code prefix",
            responses=error_responses(401, 403, 404, 422))
def search(
    system: SystemPath,
    services: ServicesDep,
    principal: EhrDep,
    q: Annotated[str, Query(min_length=1, max_length=200, description="Words that must all appear",
                            examples=["diabetes polyneuropathy"])],
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    billable: Annotated[bool, Query(description="Only billable codes")] = False,
) -> SearchResponse:
    check_system(system)
    repo = services.runtime.codebooks
    hits = repo.search(system, q, limit=limit, billable_only=billable)
    return SearchResponse(
        system=system, version=repo.codeset_version(system), query=q,
        hits=[SearchHitOut(**dataclasses.asdict(h)) for h in hits],
    )
