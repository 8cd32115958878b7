"""POST /fhir/r4/DocumentReference/$suggest-codes: R4 Parameters in and out, OperationOutcome on errors."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.procedure import Procedure

from tests.api.conftest import Api

URL = "/fhir/r4/DocumentReference/$suggest-codes"
NOTE = "Assessment: Type 2 diabetes mellitus with diabetic polyneuropathy.\nVenipuncture done. No asthma.\n"
FHIR = "application/fhir+json"


def params(text: str = NOTE, *, content_type: str = "text/plain; charset=utf-8", data: str | None = None,
           encounter: bool = True, patient: bool = True) -> dict[str, Any]:
    parameter: list[dict[str, Any]] = [{"name": "documentReference", "resource": {
        "resourceType": "DocumentReference", "id": "doc-1", "status": "current",
        "content": [{"attachment": {"contentType": content_type,
                                    "data": data if data is not None else base64.b64encode(text.encode()).decode()}}],
    }}]
    if encounter:
        parameter.append({"name": "encounter", "resource": {
            "resourceType": "Encounter", "id": "enc-9", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
            "period": {"start": "2026-05-01T09:30:00Z"}}})
    if patient:
        parameter.append({"name": "patient", "resource": {
            "resourceType": "Patient", "id": "pat-3", "gender": "female", "birthDate": "1959-06-14"}})
    return {"resourceType": "Parameters", "parameter": parameter}


def post(api: Api, body: object, role: str = "ehr", content_type: str = FHIR):  # type: ignore[no-untyped-def]
    import json

    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return api.client.post(URL, content=raw, headers={**api.headers(role), "content-type": content_type})


def test_parameters_in_conditions_and_procedures_out(api: Api) -> None:
    r = post(api, params())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(FHIR)
    out = Parameters.model_validate(r.json())  # valid R4 Parameters
    by_name: dict[str, list[Any]] = {}
    for p in out.parameter:
        by_name.setdefault(p.name, []).append(p)
    assert by_name["requestId"][0].valueString == r.headers["x-request-id"]
    assert by_name["modelVersion"][0].valueString == "keyword-test-1"

    [condition] = [p.resource for p in by_name["condition"]]
    assert isinstance(condition, Condition)
    assert condition.code.coding[0].system == "http://hl7.org/fhir/sid/icd-10-cm"
    assert condition.code.coding[0].code == "E11.42"
    assert condition.category[0].coding[0].code == "encounter-diagnosis"
    assert condition.verificationStatus.coding[0].code == "provisional"
    assert condition.subject.reference == "Patient/pat-3"
    assert condition.encounter.reference == "Encounter/enc-9"
    [evidence] = [e for e in condition.extension if e.url.endswith(":evidence")]
    parts = {x.url: x for x in evidence.extension}
    start, end = parts["start"].valueInteger, parts["end"].valueInteger
    assert NOTE[start:end] == parts["text"].valueString == "Type 2 diabetes mellitus with diabetic polyneuropathy"
    score = next(e for e in condition.extension if e.url.endswith(":score")).valueDecimal
    assert 0 <= float(score) <= 1

    [procedure] = [p.resource for p in by_name["procedure"]]
    assert isinstance(procedure, Procedure)
    assert procedure.code.coding[0].system == "http://www.ama-assn.org/go/cpt"
    assert procedure.code.coding[0].code == "36415"
    assert next(e for e in procedure.extension if e.url.endswith(":units")).valueInteger == 1
    assert not any(e.url.endswith(":units") for e in condition.extension)


def test_encounter_and_patient_feed_the_coding_request(api: Api) -> None:
    assert post(api, params()).status_code == 200
    seen = api.runtime.pipeline.last_request
    assert seen is not None
    assert seen.setting == "emergency"
    assert seen.date_of_service.isoformat() == "2026-05-01"
    assert seen.patient.age == 66 and seen.patient.sex == "female"
    assert seen.text == NOTE


def test_plain_document_without_encounter_or_patient(api: Api) -> None:
    r = post(api, params(encounter=False, patient=False), content_type="application/json")
    assert r.status_code == 200
    conditions = [p for p in r.json()["parameter"] if p["name"] == "condition"]
    assert conditions[0]["resource"]["subject"] == {"display": "unknown patient"}
    assert api.runtime.pipeline.last_request.setting == "outpatient"


def outcome_code(r: Any) -> str:
    oo = OperationOutcome.model_validate(r.json())
    assert oo.id == r.headers["x-request-id"]
    return str(oo.issue[0].details.coding[0].code)


def _bad_resource_type() -> dict[str, Any]:
    body = params()
    body["parameter"][0]["resource"]["resourceType"] = "NoSuchThing"
    return body


def _no_document() -> dict[str, Any]:
    body = params()
    body["parameter"] = body["parameter"][1:]
    return body


def _born_after_visit() -> dict[str, Any]:
    body = copy.deepcopy(params())
    body["parameter"][2]["resource"]["birthDate"] = "2027-01-01"
    return body


def _impossible_date() -> dict[str, Any]:
    body = copy.deepcopy(params())
    body["parameter"][1]["resource"]["period"]["start"] = "2026-02-30"
    return body


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"resourceType": "Patient"}, 422, "invalid_fhir"),
    ([], 422, "invalid_fhir"),
    ({"resourceType": "Parameters", "parameter": "x"}, 422, "invalid_fhir"),
    (_bad_resource_type(), 422, "invalid_fhir"),
    (_no_document(), 422, "invalid_fhir"),
    (_born_after_visit(), 422, "invalid_fhir"),
    (_impossible_date(), 422, "invalid_fhir"),
    (params(data="!!!not base64"), 422, "invalid_fhir"),
    (params(content_type="application/pdf"), 422, "invalid_fhir"),
    (params(""), 422, "empty_note"),
    (params(data=base64.b64encode(b"caf\xe9 \xff\xfe").decode()), 400, "invalid_encoding"),
    (params(content_type="text/plain; charset=klingon"), 400, "invalid_encoding"),
    (b"{not json", 400, "invalid_json"),
    (b"\xff\xfe\xfd", 400, "invalid_encoding"),
])
def test_invalid_fhir_is_an_operation_outcome(api: Api, body: object, status: int, code: str) -> None:
    r = post(api, body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(FHIR)
    assert outcome_code(r) == code


def test_wrong_media_type_and_auth_errors_are_operation_outcomes(api: Api) -> None:
    r = post(api, params(), content_type="text/plain")
    assert r.status_code == 415 and outcome_code(r) == "unsupported_media_type"
    r = api.client.post(URL, json=params())
    assert r.status_code == 401 and outcome_code(r) == "unauthorized"


def test_too_long_note_is_413(api: Api) -> None:
    r = post(api, params("a" * (api.settings.max_note_chars + 1)))
    assert r.status_code == 413 and outcome_code(r) == "note_too_large"
