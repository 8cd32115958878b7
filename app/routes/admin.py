"""Administration over HTTP (admin role): API keys and code-set imports; code-set listing for any key."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path as FilePath
from typing import Annotated, Literal

from fastapi import APIRouter, File, Path, UploadFile
from pydantic import BaseModel, Field

from app.auth import ROLES, AuthError, create_api_key, list_api_keys, revoke_api_key
from app.deps import AdminDep, EhrDep, ServicesDep
from app.errors import ApiError
from app.routes.common import error_responses
from app.services.storage import write_session
from codebooks.errors import CodebookError

router = APIRouter(tags=["admin"])


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["epic-prod"])
    role: Literal["ehr", "coder", "admin"] = "ehr"


class ApiKeyOut(BaseModel):
    key_id: str
    name: str
    role: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The full key; shown once, never retrievable again")


class CodeSetOut(BaseModel):
    system: str
    version: str
    effective_from: dt.date
    effective_to: dt.date | None
    source: str
    is_licensed: bool
    code_count: int


class ImportOut(BaseModel):
    system: str
    version: str
    rows: int
    skipped: bool
    seconds: float


@router.get("/v1/codesets", response_model=list[CodeSetOut], summary="Loaded code-set versions",
            responses=error_responses(401, 403))
def codesets(services: ServicesDep, principal: EhrDep) -> list[CodeSetOut]:
    return [CodeSetOut(**v.__dict__) for v in services.runtime.codebooks.versions()]


@router.get("/v1/admin/apikeys", response_model=list[ApiKeyOut], summary="List API keys (never their secrets)",
            responses=error_responses(401, 403))
def apikeys(services: ServicesDep, principal: AdminDep) -> list[ApiKeyOut]:
    with services.runtime.sessions() as session:
        return [ApiKeyOut(key_id=k.key_id, name=k.name, role=k.role, created_at=k.created_at,
                          revoked_at=k.revoked_at) for k in list_api_keys(session)]


@router.post("/v1/admin/apikeys", response_model=ApiKeyCreated, status_code=201, summary="Create an API key",
             responses=error_responses(401, 403, 422))
def create_key(body: ApiKeyIn, services: ServicesDep, principal: AdminDep) -> ApiKeyCreated:
    assert body.role in ROLES
    try:
        with write_session(services.runtime.engine) as session:
            created = create_api_key(session, body.name, body.role)
    except AuthError as exc:
        raise ApiError("invalid_request", exc.message) from exc
    return ApiKeyCreated(key_id=created.key_id, name=created.name, role=created.role,
                         created_at=dt.datetime.now(dt.UTC), key=created.key)


@router.delete("/v1/admin/apikeys/{key_id}", status_code=204, summary="Revoke an API key",
               responses=error_responses(401, 403, 404))
def revoke_key(key_id: Annotated[str, Path(max_length=32)], services: ServicesDep, principal: AdminDep) -> None:
    with write_session(services.runtime.engine) as session:
        if not revoke_api_key(session, key_id):
            raise ApiError("not_found", f"no API key {key_id}")


@router.post("/v1/admin/codesets/{kind}", response_model=ImportOut,
             summary="Import a licensed CPT, HCPCS, MCE or ICD-10-CM index file",
             description="The coding pipeline reads code sets at start-up: restart the service to use new ones "
                         "for suggestions (look-up and validation see them at once).",
             responses=error_responses(401, 403, 422))
def import_codeset(
    kind: Literal["cpt", "hcpcs", "mce", "index"],
    services: ServicesDep,
    principal: AdminDep,
    file: Annotated[UploadFile, File(description="The file as downloaded from AMA/CMS/CDC")],
    force: bool = False,
) -> ImportOut:
    from codebooks.loaders.cpt import import_licensed_cpt
    from codebooks.loaders.hcpcs import import_hcpcs
    from codebooks.loaders.icd10cm_index import import_index
    from codebooks.loaders.mce import import_mce

    importer = {"cpt": import_licensed_cpt, "hcpcs": import_hcpcs, "mce": import_mce, "index": import_index}[kind]
    name = FilePath(file.filename or f"{kind}.txt").name
    with tempfile.TemporaryDirectory(prefix="notecoder-import-") as tmp:
        path = FilePath(tmp) / name
        with path.open("wb") as fh:
            while chunk := file.file.read(1 << 20):
                fh.write(chunk)
        try:
            with services.runtime.sessions.begin() as session:
                report = importer(session, path, force=force)  # type: ignore[operator]
        except CodebookError as exc:
            raise ApiError("invalid_request", exc.message) from exc
    return ImportOut(system=report.system, version=report.version,
                     rows=report.codes or report.terms or report.edits, skipped=report.skipped,
                     seconds=round(report.seconds, 2))
