"""POST /v1/validate and the code look-up routes, on the real ICD-10-CM and curated CPT code sets (and the
real CMS MCE v37 list edits, imported into this module's database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.services.validation import target_matches
from codebooks.loaders.mce import import_mce
from tests.api.conftest import Api, start_api
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def mce_api(template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    for api in start_api(template_db, tmp_path_factory.mktemp("mce")):
        with api.runtime.sessions.begin() as s:
            import_mce(s, shared_file("refdata", "mce_fy2016_2020", "MCE_Simple_Code_Edits_v37.txt"))
        yield api


def validate(api: Api, codes: list[tuple[str, str]], **extra: object):  # type: ignore[no-untyped-def]
    body = {"codes": [{"system": s, "code": c} for s, c in codes], **extra}
    return api.client.post("/v1/validate", json=body, headers=api.headers("ehr"))


def issues(response_json: dict[str, object]) -> dict[str, list[str]]:
    return {c["code"]: [i["kind"] for i in c["issues"]] for c in response_json["codes"]}  # type: ignore[union-attr]


def test_a_clean_claim_is_valid(api: Api) -> None:
    r = validate(api, [("icd10cm", "E11.42"), ("icd10cm", "I10"), ("cpt", "36415")], date_of_service="2026-05-01")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["is_valid"] is True
    assert issues(body) == {"E11.42": [], "I10": [], "36415": []}
    assert body["codeset_versions"]["icd10cm"] == "FY2026-04"
    assert body["request_id"] == r.headers["x-request-id"]


def test_excludes1_not_billable_unknown_and_duplicate(api: Api) -> None:
    r = validate(api, [("icd10cm", "E11.9"), ("icd10cm", "E109"), ("icd10cm", "E11"), ("icd10cm", "Q99.999"),
                       ("icd10cm", "I10"), ("icd10cm", "I10")])
    body = r.json()
    assert body["is_valid"] is False
    found = {c["code"]: c for c in body["codes"]}
    assert "excludes1" in [i["kind"] for i in found["E11.9"]["issues"]]
    assert [i["related"] for i in found["E11.9"]["issues"] if i["kind"] == "excludes1"] == [["E10.9"]]
    assert "excludes1" in [i["kind"] for i in found["E10.9"]["issues"]]  # the undotted code was normalized
    assert "not_billable" in [i["kind"] for i in found["E11"]["issues"]]
    assert "E11.9" in next(i for i in found["E11"]["issues"] if i["kind"] == "not_billable")["related"]
    assert [i["kind"] for i in found["Q99.999"]["issues"]] == ["not_found"]
    assert [i["kind"] for i in body["codes"][-1]["issues"]] == ["duplicate"]


def test_excludes1_targets() -> None:
    assert target_matches("E10.-", "E10.9")
    assert target_matches("O24.4-", "O24.419")
    assert not target_matches("O24.4-", "O24.3")
    assert target_matches("P70-P74", "P72.1")
    assert not target_matches("P70-P74", "P75")
    assert target_matches("P70.2", "P70.2")
    assert not target_matches("certain localized infections - see body system-related chapters", "A00.0")


def test_unknown_systems_and_bad_lists_are_422(api: Api) -> None:
    for body in ({"codes": []}, {"codes": [{"system": "snomed", "code": "123"}]},
                 {"codes": [{"system": "icd10cm", "code": ""}]}, {"codes": "E11.9"},
                 {"codes": [{"system": "icd10cm", "code": "I10"}], "date_of_service": "2026-13-01"}):
        r = api.client.post("/v1/validate", json=body, headers=api.headers("ehr"))
        assert r.status_code == 422, body
        assert r.json()["error"]["code"] == "invalid_request"
    assert api.client.post("/v1/validate", json={"codes": [{"system": "icd10cm", "code": "I10"}]}).status_code == 401


def test_mce_age_and_sex_edits(mce_api: Api) -> None:
    # N40.0 (BPH) is male-only, O80 maternity, A33 (tetanus neonatorum) newborn-only in the CMS MCE list edits.
    r = validate(mce_api, [("icd10cm", "N40.0"), ("icd10cm", "O80"), ("icd10cm", "A33")],
                 patient={"age": 40, "sex": "female"}, setting="inpatient")
    assert r.status_code == 200, r.text
    found = issues(r.json())
    assert "sex" in found["N40.0"]
    assert "age" in found["A33"]
    assert found["O80"] == []
    r = validate(mce_api, [("icd10cm", "O80")], patient={"age": 70, "sex": "male"})
    assert set(issues(r.json())["O80"]) == {"age", "sex"}
    r = validate(mce_api, [("icd10cm", "N40.0")], patient={"age": 70, "sex": "male"})
    assert r.json()["is_valid"] is True


def test_mce_manifestation_code_cannot_be_listed_first(mce_api: Api) -> None:
    # G63 (polyneuropathy in diseases classified elsewhere) is a manifestation code.
    r = validate(mce_api, [("icd10cm", "G63"), ("icd10cm", "E11.42")], setting="inpatient")
    assert "manifestation" in issues(r.json())["G63"]
    r = validate(mce_api, [("icd10cm", "E11.42"), ("icd10cm", "G63")], setting="inpatient")
    assert "manifestation" not in issues(r.json())["G63"]


# ---- look-up --------------------------------------------------------------------------------------
def test_lookup_one_code(api: Api) -> None:
    r = api.client.get("/v1/codes/icd10cm/E1142", headers=api.headers("ehr"))
    assert r.status_code == 200
    body = r.json()
    assert body["code"] == "E11.42" and body["is_billable"] is True and body["parent"] == "E11.4"
    assert body["version"] == "FY2026-04"
    r = api.client.get("/v1/codes/icd10cm/E11", headers=api.headers("ehr"))
    assert "E11.9" in r.json()["children"] and "excludes1" in r.json()["instructions"]
    r = api.client.get("/v1/codes/cpt/36415", headers=api.headers("ehr"))
    assert r.status_code == 200 and r.json()["system"] == "cpt"


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/v1/codes/icd10cm/Q99.999", 404, "code_not_found"),
    ("/v1/codes/snomed/123", 404, "unknown_code_system"),
    ("/v1/codes/mce/N40.0", 404, "unknown_code_system"),
    ("/v1/codes/icd10cm/E11.9?date=2026-02-30", 422, "invalid_request"),
    ("/v1/codes/icd10cm/E11.9?date=1990-01-01", 422, "invalid_request"),
    ("/v1/codes/icd10cm", 422, "invalid_request"),
    ("/v1/codes/icd10cm?q=", 422, "invalid_request"),
    ("/v1/codes/icd10cm?q=asthma&limit=0", 422, "invalid_request"),
    ("/v1/codes/icd10cm?q=asthma&limit=abc", 422, "invalid_request"),
    ("/v1/codes/hcpcs?q=wheelchair", 404, "codeset_not_loaded"),
])
def test_lookup_errors(api: Api, path: str, status: int, code: str) -> None:
    r = api.client.get(path, headers=api.headers("ehr"))
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_search(api: Api) -> None:
    r = api.client.get("/v1/codes/icd10cm", params={"q": "diabetes polyneuropathy", "limit": 5, "billable": True},
                       headers=api.headers("ehr"))
    assert r.status_code == 200
    body = r.json()
    codes = [h["code"] for h in body["hits"]]
    assert "E11.42" in codes and len(codes) <= 5
    assert all(h["is_billable"] for h in body["hits"])
    assert body["version"] == "FY2026-04" and body["query"] == "diabetes polyneuropathy"
    r = api.client.get("/v1/codes/icd10cm", params={"q": "qqqzzzxxx"}, headers=api.headers("ehr"))
    assert r.status_code == 200 and r.json()["hits"] == []
    assert api.client.get("/v1/codes/icd10cm", params={"q": "asthma"}).status_code == 401


def test_codesets_list(api: Api) -> None:
    r = api.client.get("/v1/codesets", headers=api.headers("ehr"))
    assert r.status_code == 200
    assert {v["system"] for v in r.json()} >= {"icd10cm", "cpt"}
