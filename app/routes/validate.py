"""`POST /v1/validate`: claim-style checks on a list of codes for one encounter."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import EhrDep, RequestIdDep, ServicesDep
from app.routes.common import error_responses
from app.schemas import ValidateRequest, ValidateResponse

router = APIRouter(prefix="/v1", tags=["validation"])


@router.post(
    "/validate",
    response_model=ValidateResponse,
    summary="Check codes: existence on the date of service, billable, Excludes1 pairs, MCE age/sex edits",
    description="The first ICD-10-CM code is taken as the principal (first-listed) diagnosis. MCE edits apply "
                "when a Medicare Code Editor file has been imported (`notecoder codebook import-mce`).",
    responses=error_responses(401, 403, 422),
)
def validate(body: ValidateRequest, services: ServicesDep, principal: EhrDep,
             request_id: RequestIdDep) -> ValidateResponse:
    return services.validator.validate(body, request_id)
