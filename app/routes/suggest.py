"""`POST /v1/suggest`: one note in, ranked ICD-10-CM and CPT suggestions with evidence out."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import CoderDep, EhrDep, RequestIdDep
from app.routes.common import error_responses
from app.schemas import SuggestRequest, SuggestResponse

router = APIRouter(prefix="/v1", tags=["coding"])

EXAMPLE_RESPONSE = {
    "request_id": "3f0c1d0e9b2a4c55a1e0f7d7c2b9a811",
    "model_version": "minilm-l6-v2+notecoder-1",
    "codeset_versions": {"icd10cm": "FY2026-04", "cpt": "curated-2026"},
    "rules_version": "rules-3c1f2a",
    "suggestions": [{
        "system": "icd10cm", "code": "E11.42", "description": "Type 2 diabetes mellitus with diabetic polyneuropathy",
        "score": 0.93, "rank": 1,
        "evidence": [{"start": 12, "end": 55, "text": "Type 2 diabetes with diabetic polyneuropathy",
                      "section": "Assessment", "assertion": "present"}],
        "flags": [],
    }],
    "excluded": [],
    "warnings": [],
}


@router.post(
    "/suggest",
    response_model=SuggestResponse,
    summary="Suggest codes for one clinical note",
    description="Runs the coding pipeline and writes one audit record (note hash and length, never the text). "
                "Every evidence span satisfies `text == submitted_text[start:end]`.",
    responses={200: {"content": {"application/json": {"example": EXAMPLE_RESPONSE}}},
               **error_responses(400, 401, 403, 413, 422, 503)},
)
def suggest(body: SuggestRequest, coder: CoderDep, principal: EhrDep, request_id: RequestIdDep) -> SuggestResponse:
    # A plain `def`: FastAPI runs it in its thread pool, so the CPU-bound pipeline never blocks the event loop.
    return coder.suggest(body, principal, request_id)
