"""POST /v1/suggest through create_app: the contract shape, the audit record, and every kind of bad input."""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import audit
from app.models import AuditRecord, SuggestionRun
from tests.api.conftest import Api
from tests.api.support import BOOM, REFUSE

NOTE = (
    "HPI: follow-up visit.\n"
    "Assessment: Type 2 diabetes mellitus with diabetic polyneuropathy. Essential hypertension.\n"
    "Patient denies asthma. Venipuncture performed in clinic.\n"
)
MARKER = "ZEBRA-PHI-MARKER-4711"


def audit_rows(api: Api) -> list[AuditRecord]:
    with Session(api.runtime.engine) as s:
        return list(s.scalars(select(AuditRecord).order_by(AuditRecord.seq)))


def test_suggest_answers_the_contract_shape(api: Api) -> None:
    body = {"text": NOTE, "setting": "outpatient", "date_of_service": "2026-05-01",
            "patient": {"age": 67, "sex": "female"}, "code_systems": ["icd10cm", "cpt"], "max_suggestions": 20,
            "note_id": "enc-1"}
    r = api.client.post("/v1/suggest", json=body, headers=api.headers("ehr"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["request_id"] == r.headers["x-request-id"]
    assert out["model_version"] == "keyword-test-1"
    assert out["codeset_versions"] == {"icd10cm": "FY2026-04", "cpt": api.runtime.codebooks.codeset_version("cpt")}
    codes = [(s["system"], s["code"]) for s in out["suggestions"]]
    assert codes == [("icd10cm", "E11.42"), ("icd10cm", "I10"), ("cpt", "36415")]
    assert [s["rank"] for s in out["suggestions"]] == [1, 2, 3]
    for s in out["suggestions"]:
        assert 0.0 <= s["score"] <= 1.0
        assert s["evidence"], "every suggestion has evidence"
        for e in s["evidence"]:
            assert NOTE[e["start"]:e["end"]] == e["text"]
    assert out["excluded"] == [{"text": "asthma", "start": NOTE.index("asthma"), "end": NOTE.index("asthma") + 6,
                                "reason": "negated", "candidate_codes": ["J45.909"]}]
    assert out["note_id"] == "enc-1"
    # The pipeline received what the request said.
    seen = api.runtime.pipeline.last_request
    assert seen is not None and seen.patient.age == 67 and seen.patient.sex == "female"
    assert seen.date_of_service.isoformat() == "2026-05-01" and seen.code_systems == ("icd10cm", "cpt")


def test_code_systems_and_max_suggestions_limit_the_answer(api: Api) -> None:
    r = api.client.post("/v1/suggest", json={"text": NOTE, "code_systems": ["cpt"], "max_suggestions": 1},
                        headers=api.headers("ehr"))
    assert r.status_code == 200
    assert [(s["system"], s["code"]) for s in r.json()["suggestions"]] == [("cpt", "36415")]
    assert list(r.json()["codeset_versions"]) == ["cpt"]


def test_each_suggest_writes_one_audit_record_without_note_text(api: Api) -> None:
    before = len(audit_rows(api))
    text = f"Assessment: essential hypertension. {MARKER}"
    r = api.client.post("/v1/suggest", json={"text": text, "setting": "emergency"}, headers=api.headers("coder"))
    assert r.status_code == 200
    rows = audit_rows(api)
    assert len(rows) == before + 1
    record = rows[-1]
    body = json.loads(record.body)
    assert record.kind == "suggest" and record.request_id == r.json()["request_id"]
    assert record.principal == rows[-1].principal and record.principal.startswith("apikey:test-coder#")
    assert MARKER not in record.body
    import hashlib

    assert body["note_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert body["note_chars"] == len(text)
    assert body["setting"] == "emergency"
    assert body["model_version"] == "keyword-test-1" and body["rules_version"] == "keyword-rules-1"
    assert body["codeset_versions"]["icd10cm"] == "FY2026-04"
    assert body["suggestions"] == [{"system": "icd10cm", "code": "I10", "score": 0.9, "rank": 1}]
    assert body["latency_ms"] >= 0
    assert body["prev_hash"] == (rows[-2].hash if len(rows) > 1 else audit.GENESIS_HASH)
    with Session(api.runtime.engine) as s:
        assert audit.verify(s).ok
        run = s.get(SuggestionRun, record.request_id)
        assert run is not None and run.status == "open" and run.note_chars == len(text)


@pytest.mark.parametrize("role", ["ehr", "coder", "admin"])
def test_every_role_may_suggest(api: Api, role: str) -> None:
    r = api.client.post("/v1/suggest", json={"text": "asthma"}, headers=api.headers(role))
    assert r.status_code == 200


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer nc_000000000000_wrongsecret"},
    {"Authorization": "Bearer not-a-key"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
])
def test_suggest_without_a_valid_key_is_401(api: Api, headers: dict[str, str]) -> None:
    before = len(audit_rows(api))
    r = api.client.post("/v1/suggest", json={"text": "asthma"}, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    assert len(audit_rows(api)) == before


def test_a_tampered_secret_is_rejected(api: Api) -> None:
    key = api.keys["ehr"]
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    r = api.client.post("/v1/suggest", json={"text": "asthma"}, headers={"Authorization": f"Bearer {tampered}"})
    assert r.status_code == 401


BAD_BODIES = [
    ({"text": ""}, 422, "empty_note"),
    ({"text": " \n\t  "}, 422, "empty_note"),
    ({"text": "asthma", "setting": "icu"}, 422, "invalid_request"),
    ({"text": "asthma", "code_systems": ["snomed"]}, 422, "invalid_request"),
    ({"text": "asthma", "code_systems": []}, 422, "invalid_request"),
    ({"text": "asthma", "date_of_service": "2026-02-30"}, 422, "invalid_request"),
    ({"text": "asthma", "date_of_service": "1999-01-01"}, 422, "invalid_request"),
    ({"text": "asthma", "date_of_service": "2999-01-01"}, 422, "invalid_request"),
    ({"text": "asthma", "patient": {"age": -1}}, 422, "invalid_request"),
    ({"text": "asthma", "patient": {"age": 200}}, 422, "invalid_request"),
    ({"text": "asthma", "patient": {"sex": "robot"}}, 422, "invalid_request"),
    ({"text": "asthma", "max_suggestions": 0}, 422, "invalid_request"),
    ({"text": 42}, 422, "invalid_request"),
    ({"text": ["a"]}, 422, "invalid_request"),
    ({"note": "asthma"}, 422, "invalid_request"),
    ({"text": "asthma", "unexpected": 1}, 422, "invalid_request"),
    ([], 422, "invalid_request"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES)
def test_bad_bodies_are_4xx_with_the_error_shape(api: Api, body: object, status: int, code: str) -> None:
    r = api.client.post("/v1/suggest", json=body, headers=api.headers("ehr"))
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == r.headers["x-request-id"]


def test_validation_errors_never_echo_the_note(api: Api) -> None:
    r = api.client.post("/v1/suggest", json={"text": f"asthma {MARKER}", "setting": "nowhere"},
                        headers=api.headers("ehr"))
    assert r.status_code == 422
    assert MARKER not in r.text
    assert r.json()["error"]["details"][0]["loc"] == ["body", "setting"]


def test_note_over_the_limit_is_413_and_says_what_to_do(api: Api) -> None:
    limit = api.settings.max_note_chars
    r = api.client.post("/v1/suggest", json={"text": "a" * (limit + 1)}, headers=api.headers("ehr"))
    assert r.status_code == 413
    error = r.json()["error"]
    assert error["code"] == "note_too_large"
    assert "split" in error["message"] and "batch" in error["message"]


def test_a_body_far_over_the_limit_is_refused_before_parsing(api: Api) -> None:
    blob = b'{"text": "' + b"a" * (api.settings.max_note_chars * 6 + 70_000) + b'"}'
    r = api.client.post("/v1/suggest", content=blob,
                        headers={**api.headers("ehr"), "content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize(("raw", "content_type", "status", "code"), [
    (b"{not json", "application/json", 400, "invalid_json"),
    (b'{"text": "asthma",}', "application/json", 400, "invalid_json"),
    # Leading bytes that look like a UTF-16 byte-order mark: decoded as such, then not JSON.
    (b"\xff\xfe\x00\x01binary", "application/json", 400, "invalid_json"),
    (b'{"text": "\x89PNG\r\n\x1a\n\x00\x00"}', "application/json", 400, "invalid_encoding"),
    (b'{"text": "caf\xe9"}', "application/json", 400, "invalid_encoding"),
    (b'{"text": "asthma"}', "text/plain", 415, "unsupported_media_type"),
    (b"", "application/json", 422, "invalid_request"),
])
def test_undecodable_bodies_are_4xx(api: Api, raw: bytes, content_type: str, status: int, code: str) -> None:
    r = api.client.post("/v1/suggest", content=raw, headers={**api.headers("ehr"), "content-type": content_type})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_nul_characters_are_refused_as_binary(api: Api) -> None:
    r = api.client.post("/v1/suggest", json={"text": "asthma\u0000\u0001\u0002"}, headers=api.headers("ehr"))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_encoding"


def test_pipeline_failure_is_500_without_traceback_or_note_in_logs(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = api.client.post("/v1/suggest", json={"text": f"{BOOM} {MARKER}"}, headers=api.headers("ehr"))
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
    assert "Traceback" not in r.text and MARKER not in r.text
    assert MARKER not in caplog.text
    assert r.headers["x-request-id"] in caplog.text


def test_pipeline_errors_keep_their_code_and_are_4xx(api: Api) -> None:
    r = api.client.post("/v1/suggest", json={"text": f"{REFUSE} asthma"}, headers=api.headers("ehr"))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "unsupported_setting"
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]


def test_no_note_text_in_logs_on_success(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = api.client.post("/v1/suggest", json={"text": f"essential hypertension {MARKER}"}, headers=api.headers("ehr"))
    assert r.status_code == 200
    assert MARKER not in caplog.text
    assert "/v1/suggest 200" in caplog.text


def test_unknown_routes_and_methods_use_the_error_shape(api: Api) -> None:
    r = api.client.get("/v1/nothing-here", headers=api.headers("ehr"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = api.client.get("/v1/suggest", headers=api.headers("ehr"))
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_audit_count_matches_successful_requests(api: Api) -> None:
    with Session(api.runtime.engine) as s:
        runs = s.scalar(select(func.count()).select_from(SuggestionRun))
        suggest_records = s.scalar(select(func.count()).select_from(AuditRecord).where(AuditRecord.kind == "suggest"))
        assert runs == suggest_records
        assert audit.verify(s).ok
