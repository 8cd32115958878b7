"""Roles on every route, key management over HTTP, health checks, metrics and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from nlp.types import CodingRequest, CodingResult
from tests.api.conftest import Api, start_api
from tests.api.support import KeywordPipeline, auth, copy_database, keyword_runtime, make_keys

ROUTES = [
    # (method, path, json body, lowest role allowed)
    ("POST", "/v1/suggest", {"text": "asthma"}, "ehr"),
    ("POST", "/v1/validate", {"codes": [{"system": "icd10cm", "code": "I10"}]}, "ehr"),
    ("GET", "/v1/codes/icd10cm/I10", None, "ehr"),
    ("GET", "/v1/codes/icd10cm?q=asthma", None, "ehr"),
    ("GET", "/v1/codesets", None, "ehr"),
    ("POST", "/v1/suggestions/{rid}/review", {"decisions": [{"system": "icd10cm", "code": "J45.909",
                                                             "action": "accept"}]}, "coder"),
    ("GET", "/v1/suggestions/{rid}", None, "coder"),
    ("GET", "/v1/suggestions/{rid}/note", None, "coder"),
    ("GET", "/v1/admin/apikeys", None, "admin"),
    ("POST", "/v1/admin/apikeys", {"name": "made-in-test", "role": "ehr"}, "admin"),
    ("GET", "/metrics", None, "admin"),
]
RANK = {"ehr": 0, "coder": 1, "admin": 2}


@pytest.fixture(scope="module")
def rid(api: Api) -> str:
    r = api.client.post("/v1/suggest", json={"text": "asthma"}, headers=api.headers("ehr"))
    return str(r.json()["request_id"])


@pytest.mark.parametrize(("method", "path", "body", "lowest"), ROUTES)
@pytest.mark.parametrize("role", ["ehr", "coder", "admin", None])
def test_role_matrix(api: Api, rid: str, method: str, path: str, body: object, lowest: str, role: str | None) -> None:
    headers = api.headers(role) if role else {}
    r = api.client.request(method, path.format(rid=rid), json=body, headers=headers)
    if role is None:
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthorized"
    elif RANK[role] < RANK[lowest]:
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "forbidden"
    else:
        assert r.status_code in (200, 201), r.text


def test_health_checks_are_open(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    r = api.client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready" and r.json()["model_version"] == "keyword-test-1"


def test_admin_creates_and_revokes_keys_over_http(api: Api) -> None:
    r = api.client.post("/v1/admin/apikeys", json={"name": "ehr-partner", "role": "ehr"},
                        headers=api.headers("admin"))
    assert r.status_code == 201
    created = r.json()
    new = auth(created["key"])
    assert api.client.post("/v1/suggest", json={"text": "asthma"}, headers=new).status_code == 200
    listed = api.client.get("/v1/admin/apikeys", headers=api.headers("admin")).json()
    assert created["key_id"] in [k["key_id"] for k in listed]
    assert all("key" not in k and "secret_hash" not in k for k in listed)
    r = api.client.delete(f"/v1/admin/apikeys/{created['key_id']}", headers=api.headers("admin"))
    assert r.status_code == 204
    r = api.client.post("/v1/suggest", json={"text": "asthma"}, headers=new)
    assert r.status_code == 401
    assert api.client.delete("/v1/admin/apikeys/ffffffffffff", headers=api.headers("admin")).status_code == 404
    r = api.client.post("/v1/admin/apikeys", json={"name": "x", "role": "superuser"}, headers=api.headers("admin"))
    assert r.status_code == 422


def test_metrics_count_requests_suggestions_and_reviews(api: Api, rid: str) -> None:
    api.client.post("/v1/suggest", json={"text": "essential hypertension"}, headers=api.headers("ehr"))
    api.client.post("/v1/suggest", json={"text": ""}, headers=api.headers("ehr"))
    r = api.client.post("/v1/suggest", json={"text": "pneumonia and asthma"}, headers=api.headers("ehr"))
    api.client.post(f"/v1/suggestions/{r.json()['request_id']}/review", json={"decisions": [
        {"system": "icd10cm", "code": "J18.9", "action": "accept"},
        {"system": "icd10cm", "code": "J45.909", "action": "reject"}], "final": True}, headers=api.headers("coder"))
    r = api.client.get("/metrics", headers=api.headers("admin"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    lines = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line and not line.startswith("#")}
    assert lines['notecoder_http_requests_total{method="POST",route="/v1/suggest",status="200"}'] >= 2
    assert lines['notecoder_http_requests_total{method="POST",route="/v1/suggest",status="422"}'] >= 1
    assert lines['notecoder_http_request_duration_seconds_count{method="POST",route="/v1/suggest",status="200"}'] >= 2
    assert lines['notecoder_suggestions_served_total{system="icd10cm"}'] >= 3
    assert lines['notecoder_review_decisions_total{action="accept"}'] >= 1
    assert lines['notecoder_review_decisions_total{action="reject"}'] >= 1
    assert lines['notecoder_review_decisions_total{action="final"}'] >= 1
    # Paths with ids are reported by their template, never raw.
    assert rid not in text


def test_openapi_documents_every_route_with_examples(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/suggest", "/v1/suggestions/{request_id}/review", "/v1/validate", "/v1/codes/{system}/{code}",
                 "/v1/codes/{system}", "/fhir/r4/DocumentReference/$suggest-codes", "/healthz", "/readyz",
                 "/metrics"):
        assert path in paths, path
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    schemas = spec["components"]["schemas"]
    for name in ("SuggestRequest", "ReviewRequest", "ValidateRequest"):
        assert schemas[name].get("examples"), name
    suggest = paths["/v1/suggest"]["post"]
    assert suggest["responses"]["200"]["content"]["application/json"]["example"]["suggestions"]
    assert {"401", "403", "413", "422"} <= set(suggest["responses"])
    fhir = paths["/fhir/r4/DocumentReference/$suggest-codes"]["post"]
    assert fhir["requestBody"]["content"]["application/fhir+json"]["example"]["resourceType"] == "Parameters"


class SilentPipeline(KeywordPipeline):
    def code(self, request: CodingRequest) -> CodingResult:
        return CodingResult(suggestions=())


def test_readyz_is_503_while_the_canned_note_fails(template_db: Path, tmp_path: Path) -> None:
    url = copy_database(template_db, tmp_path)
    runtime = keyword_runtime(url)
    runtime.pipeline = SilentPipeline(runtime.codebooks)
    make_keys(runtime.engine)
    app = create_app(Settings(data_dir=tmp_path, database_url=url), runtime=runtime)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        runtime.pipeline = KeywordPipeline(runtime.codebooks)  # the pipeline recovers
        assert client.get("/readyz").status_code == 200
    runtime.engine.dispose()


def test_metrics_may_be_public(template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    for api in start_api(template_db, tmp_path_factory.mktemp("pub"), metrics_public=True):
        assert api.client.get("/metrics").status_code == 200


def test_admin_imports_a_code_set_file(template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.conftest import shared_file

    mce = shared_file("refdata", "mce_fy2016_2020", "MCE_Simple_Code_Edits_v36.txt")
    for api in start_api(template_db, tmp_path_factory.mktemp("import")):
        url = "/v1/admin/codesets/mce"
        with mce.open("rb") as fh:
            files = {"file": (mce.name, fh, "text/plain")}
            assert api.client.post(url, files=files, headers=api.headers("coder")).status_code == 403
        with mce.open("rb") as fh:
            r = api.client.post(url, files={"file": (mce.name, fh, "text/plain")}, headers=api.headers("admin"))
        assert r.status_code == 200, r.text
        assert r.json()["system"] == "mce" and r.json()["version"] == "v36" and r.json()["rows"] > 10_000
        listed = api.client.get("/v1/codesets", headers=api.headers("ehr")).json()
        assert any(v["system"] == "mce" and v["version"] == "v36" for v in listed)
        r = api.client.post(url, files={"file": ("junk.txt", b"not an MCE file\n", "text/plain")},
                            headers=api.headers("admin"))
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        r = api.client.post("/v1/admin/codesets/snomed", files={"file": ("x.txt", b"x", "text/plain")},
                            headers=api.headers("admin"))
        assert r.status_code == 422
