"""POST /v1/suggestions/{request_id}/review: decisions, finality, replays, conflicts, the audit trail,
and the note store behind the review UI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import audit
from app.models import AuditRecord, Review, StoredNote
from tests.api.conftest import Api, start_api

NOTE = "Assessment: Type 2 diabetes mellitus. Essential hypertension. Venipuncture."


def suggest(api: Api, text: str = NOTE) -> str:
    r = api.client.post("/v1/suggest", json={"text": text, "date_of_service": "2026-05-01"},
                        headers=api.headers("ehr"))
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


def review(api: Api, rid: str, body: dict[str, object], role: str = "coder"):  # type: ignore[no-untyped-def]
    return api.client.post(f"/v1/suggestions/{rid}/review", json=body, headers=api.headers(role))


def audit_kinds(api: Api, rid: str) -> list[str]:
    with Session(api.runtime.engine) as s:
        return list(s.scalars(select(AuditRecord.kind).where(AuditRecord.request_id == rid)
                              .order_by(AuditRecord.seq)))


def status_of(body: dict[str, object]) -> dict[str, str]:
    return {f"{c['system']}:{c['code']}": str(c["status"]) for c in body["codes"]}  # type: ignore[union-attr]


def test_accept_reject_add_then_final(api: Api) -> None:
    rid = suggest(api)
    r = review(api, rid, {"decisions": [
        {"system": "icd10cm", "code": "E11.9", "action": "accept"},
        {"system": "icd10cm", "code": "I10", "action": "reject", "reason": "not addressed"},
        {"system": "icd10cm", "code": "Z7984", "action": "add"},
    ], "expected_revision": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["revision"] == 1 and body["status"] == "open" and body["is_replay"] is False
    assert status_of(body) == {"icd10cm:E11.9": "accepted", "icd10cm:I10": "rejected", "cpt:36415": "pending",
                               "icd10cm:Z79.84": "added"}
    r = review(api, rid, {"decisions": [{"system": "cpt", "code": "36415", "action": "accept"}], "final": True,
                          "expected_revision": 1})
    assert r.status_code == 200
    assert r.json()["status"] == "final" and r.json()["revision"] == 2
    assert status_of(r.json())["cpt:36415"] == "accepted"
    assert audit_kinds(api, rid) == ["suggest", "review", "review"]
    with Session(api.runtime.engine) as s:
        record = s.scalar(select(AuditRecord).where(AuditRecord.request_id == rid, AuditRecord.kind == "review")
                          .order_by(AuditRecord.seq.desc()))
        assert record is not None
        body = json.loads(record.body)
        assert body["final"] is True and body["revision"] == 2
        assert body["decisions"] == [{"system": "cpt", "code": "36415", "action": "accept", "reason": None}]
        assert record.principal.startswith("apikey:test-coder#")
        assert audit.verify(s).ok
    got = api.client.get(f"/v1/suggestions/{rid}", headers=api.headers("coder")).json()
    assert got["review"]["status"] == "final" and [r["revision"] for r in got["reviews"]] == [1, 2]


def test_after_final_changes_are_409_and_the_same_review_replays(api: Api) -> None:
    rid = suggest(api)
    final = {"decisions": [{"system": "icd10cm", "code": "I10", "action": "accept"}], "final": True}
    assert review(api, rid, final).status_code == 200
    again = review(api, rid, final)
    assert again.status_code == 200 and again.json()["is_replay"] is True and again.json()["revision"] == 1
    other = review(api, rid, {"decisions": [{"system": "icd10cm", "code": "I10", "action": "reject"}]})
    assert other.status_code == 409 and other.json()["error"]["code"] == "review_closed"
    by_admin = review(api, rid, final, role="admin")  # same decisions, another reviewer: a change, refused
    assert by_admin.status_code == 409
    assert audit_kinds(api, rid) == ["suggest", "review"]


def test_a_retried_open_review_is_not_applied_twice(api: Api) -> None:
    rid = suggest(api)
    body = {"decisions": [{"system": "icd10cm", "code": "I10", "action": "accept"}], "expected_revision": 0}
    first, second = review(api, rid, body), review(api, rid, body)
    assert first.status_code == second.status_code == 200
    assert second.json()["is_replay"] is True and second.json()["revision"] == 1
    assert audit_kinds(api, rid) == ["suggest", "review"]


def test_stale_expected_revision_is_409(api: Api) -> None:
    rid = suggest(api)
    assert review(api, rid, {"decisions": [{"system": "icd10cm", "code": "I10", "action": "accept"}],
                             "expected_revision": 0}).status_code == 200
    r = review(api, rid, {"decisions": [{"system": "icd10cm", "code": "I10", "action": "reject"}],
                          "expected_revision": 0})
    assert r.status_code == 409 and r.json()["error"]["code"] == "review_conflict"


def test_concurrent_reviews_of_one_revision_let_exactly_one_win(api: Api) -> None:
    rid = suggest(api)
    bodies = [{"decisions": [{"system": "icd10cm", "code": "I10", "action": "accept" if i % 2 else "reject",
                              "reason": f"reviewer {i}"}], "expected_revision": 0} for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(r.status_code for r in pool.map(lambda b: review(api, rid, b), bodies))
    assert statuses == [200] + [409] * 7
    assert audit_kinds(api, rid) == ["suggest", "review"]
    with Session(api.runtime.engine) as s:
        assert len(s.scalars(select(Review).where(Review.request_id == rid)).all()) == 1
        assert audit.verify(s).ok


@pytest.mark.parametrize(("decisions", "status", "code"), [
    ([{"system": "icd10cm", "code": "I10", "action": "accept"},
      {"system": "icd10cm", "code": "I10", "action": "reject"}], 422, "conflicting_decisions"),
    ([{"system": "icd10cm", "code": "J45.909", "action": "accept"}], 422, "code_not_suggested"),
    ([{"system": "icd10cm", "code": "Q99.999", "action": "add"}], 422, "unknown_code"),
    ([{"system": "icd10cm", "code": "I10", "action": "approve"}], 422, "invalid_request"),
    ([{"system": "snomed", "code": "I10", "action": "accept"}], 422, "invalid_request"),
    ([{"system": "icd10cm", "code": "I10; DROP TABLE", "action": "accept"}], 422, "invalid_request"),
    ([], 422, "invalid_request"),
])
def test_bad_reviews_are_refused(api: Api, decisions: list[dict[str, str]], status: int, code: str) -> None:
    rid = suggest(api)
    r = review(api, rid, {"decisions": decisions})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert audit_kinds(api, rid) == ["suggest"]


def test_adding_a_category_warns_that_it_is_not_billable(api: Api) -> None:
    rid = suggest(api)
    r = review(api, rid, {"decisions": [{"system": "icd10cm", "code": "E11", "action": "add"}]})
    assert r.status_code == 200
    assert any("not billable" in w for w in r.json()["warnings"])


def test_review_needs_the_coder_role_and_a_known_request(api: Api) -> None:
    rid = suggest(api)
    body = {"decisions": [{"system": "icd10cm", "code": "I10", "action": "accept"}]}
    r = review(api, rid, body, role="ehr")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = api.client.post(f"/v1/suggestions/{rid}/review", json=body)
    assert r.status_code == 401
    r = review(api, "0" * 32, body)
    assert r.status_code == 404 and r.json()["error"]["code"] == "suggestion_not_found"
    assert review(api, rid, body, role="admin").status_code == 200


def test_note_text_is_kept_for_reviewers_only(api: Api) -> None:
    rid = suggest(api, "Essential hypertension, stable.")
    r = api.client.get(f"/v1/suggestions/{rid}/note", headers=api.headers("coder"))
    assert r.status_code == 200 and r.text == "Essential hypertension, stable."
    assert api.client.get(f"/v1/suggestions/{rid}/note", headers=api.headers("ehr")).status_code == 403
    with Session(api.runtime.engine) as s:
        row = s.get(StoredNote, rid)
        assert row is not None and row.is_encrypted is False


@pytest.fixture(scope="module")
def encrypted_api(template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from start_api(template_db, tmp_path_factory.mktemp("enc"), encryption_key=Fernet.generate_key().decode())


def test_notes_are_encrypted_at_rest_when_a_key_is_set(encrypted_api: Api) -> None:
    text = "Essential hypertension. Venipuncture. UNIQUE-CLEAR-TEXT"
    rid = suggest(encrypted_api, text)
    with Session(encrypted_api.runtime.engine) as s:
        row = s.get(StoredNote, rid)
        assert row is not None and row.is_encrypted
        assert b"UNIQUE-CLEAR-TEXT" not in row.content
    r = encrypted_api.client.get(f"/v1/suggestions/{rid}/note", headers=encrypted_api.headers("coder"))
    assert r.status_code == 200 and r.text == text


@pytest.fixture(scope="module")
def no_retention_api(template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from start_api(template_db, tmp_path_factory.mktemp("noret"), note_retention_days=0)


def test_retention_zero_keeps_no_note_text(no_retention_api: Api) -> None:
    rid = suggest(no_retention_api)
    with Session(no_retention_api.runtime.engine) as s:
        assert s.get(StoredNote, rid) is None
    r = no_retention_api.client.get(f"/v1/suggestions/{rid}/note", headers=no_retention_api.headers("coder"))
    assert r.status_code == 404
    # Reviews do not need the text.
    assert review(no_retention_api, rid, {"decisions": [{"system": "icd10cm", "code": "I10", "action": "accept"}],
                                          "final": True}).status_code == 200
