"""`POST /fhir/r4/DocumentReference/$suggest-codes`: FHIR R4 Parameters in and out.

Errors on /fhir/ routes (including 401/403) come back as a FHIR `OperationOutcome` whose
`issue[0].details.coding[0]` carries the catalogue code (system urn:notecoder:error) and whose `id` is
the request_id: FHIR clients expect an OperationOutcome, not the plain error shape.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.deps import EhrDep, RequestIdDep, ServicesDep
from app.errors import ApiError
from app.services.fhir import FHIR_JSON, build_response, encode_note, parse_request

router = APIRouter(prefix="/fhir/r4", tags=["fhir"])

ACCEPTED_TYPES = (FHIR_JSON, "application/json")

EXAMPLE_NOTE = "Assessment: Type 2 diabetes mellitus with diabetic polyneuropathy. Essential hypertension."
EXAMPLE_REQUEST = {
    "resourceType": "Parameters",
    "parameter": [
        {"name": "documentReference", "resource": {
            "resourceType": "DocumentReference", "id": "note-1", "status": "current",
            "subject": {"reference": "Patient/p1"},
            "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                        "data": encode_note(EXAMPLE_NOTE)}}],
        }},
        {"name": "encounter", "resource": {
            "resourceType": "Encounter", "id": "e1", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "period": {"start": "2026-05-01T09:30:00Z"},
        }},
        {"name": "patient", "resource": {"resourceType": "Patient", "id": "p1", "gender": "female",
                                         "birthDate": "1959-03-14"}},
    ],
}
EXAMPLE_RESPONSE = {
    "resourceType": "Parameters",
    "parameter": [
        {"name": "requestId", "valueString": "3f0c1d0e9b2a4c55a1e0f7d7c2b9a811"},
        {"name": "modelVersion", "valueString": "minilm-l6-v2+notecoder-1"},
        {"name": "condition", "resource": {
            "resourceType": "Condition",
            "extension": [
                {"url": "urn:notecoder:fhir:extension:score", "valueDecimal": 0.93},
                {"url": "urn:notecoder:fhir:extension:rank", "valueInteger": 1},
                {"url": "urn:notecoder:fhir:extension:evidence", "extension": [
                    {"url": "start", "valueInteger": 12}, {"url": "end", "valueInteger": 67},
                    {"url": "text", "valueString": "Type 2 diabetes mellitus with diabetic polyneuropathy"},
                    {"url": "section", "valueString": "Assessment"}, {"url": "assertion", "valueCode": "present"}]},
            ],
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "encounter-diagnosis"}]}],
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "provisional"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.42",
                                 "display": "Type 2 diabetes mellitus with diabetic polyneuropathy"}]},
            "subject": {"reference": "Patient/p1"},
            "encounter": {"reference": "Encounter/e1"},
        }},
    ],
}


@router.post(
    "/DocumentReference/$suggest-codes",
    summary="FHIR R4 operation: suggest codes for a DocumentReference",
    description="Body: a FHIR R4 Parameters resource (application/fhir+json) with a DocumentReference whose "
                "text/plain attachment holds the note as base64 `data`; optional Encounter (class -> setting, "
                "period.start -> date of service) and Patient (birthDate, gender). Answer: Parameters with "
                "Condition (ICD-10-CM, encounter-diagnosis, provisional) and Procedure (CPT) resources; score, "
                "rank and evidence spans sit in extensions. Errors: OperationOutcome.",
    openapi_extra={
        "requestBody": {"required": True, "content": {
            FHIR_JSON: {"schema": {"type": "object"}, "example": EXAMPLE_REQUEST},
            "application/json": {"schema": {"type": "object"}, "example": EXAMPLE_REQUEST},
        }},
    },
    responses={
        200: {"content": {FHIR_JSON: {"example": EXAMPLE_RESPONSE}}, "description": "Parameters"},
        **{status: {"content": {FHIR_JSON: {"schema": {"type": "object"}}}, "description": "OperationOutcome"}
           for status in (400, 401, 403, 413, 415, 422)},
    },
)
async def suggest_codes(request: Request, services: ServicesDep, principal: EhrDep,
                        request_id: RequestIdDep) -> JSONResponse:
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media not in ACCEPTED_TYPES:
        raise ApiError("unsupported_media_type", f"send {FHIR_JSON} (got {media or 'no Content-Type'})")
    raw = await request.body()
    fhir_in = parse_request(raw)
    # The body is read here (async) because it is not JSON the schema describes; coding is CPU-bound and goes
    # to the thread pool like the plain-def routes.
    response = await run_in_threadpool(services.coder.suggest, fhir_in.request, principal, request_id, "fhir")
    return JSONResponse(build_response(fhir_in, response), media_type=FHIR_JSON)
