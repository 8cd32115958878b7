"""The app with the real runtime (`app.runtime.build_runtime` in the lifespan): every development note through
/v1/suggest and the FHIR operation keeps the contract (ranked, scored, evidence spans that are slices of
the submitted text), and readiness codes the canned note with the real pipeline.

The encoder is off here (it has its own tests); the dictionary, ConText and rules pipeline is the real one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import audit
from app.main import create_app
from app.models import AuditRecord
from app.settings import Settings
from codebooks.db import make_engine
from tests.api.support import auth, copy_database, make_keys
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def real(template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str],
                                                                                     str]]:
    folder = tmp_path_factory.mktemp("real")
    url = copy_database(template_db, folder)
    engine = make_engine(url)
    keys = make_keys(engine)
    engine.dispose()
    settings = Settings(data_dir=folder, database_url=url, use_encoder=False)
    with TestClient(create_app(settings)) as client:
        yield client, keys, url


def dev_notes() -> list[dict[str, object]]:
    path = shared_file("dev", "dev_notes.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.slow
def test_every_dev_note_keeps_the_contract(real: tuple[TestClient, dict[str, str], str]) -> None:
    client, keys, url = real
    assert client.get("/readyz").status_code == 200
    notes = dev_notes()
    for note in notes:
        text = str(note["text"])
        body = {"text": text, "setting": note.get("setting") or "outpatient",
                "date_of_service": note.get("date_of_service"), "patient": note.get("patient") or {}}
        r = client.post("/v1/suggest", json=body, headers=auth(keys["ehr"]))
        assert r.status_code == 200, (note["id"], r.text[:300])
        out = r.json()
        assert out["model_version"] and out["rules_version"]
        assert set(out["codeset_versions"]) == {"icd10cm", "cpt"}
        ranks = [s["rank"] for s in out["suggestions"]]
        assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
        assert len(out["suggestions"]) <= 20
        for s in out["suggestions"]:
            assert 0.0 <= s["score"] <= 1.0
            assert s["evidence"], (note["id"], s["code"])
            for e in s["evidence"]:
                assert text[e["start"]:e["end"]] == e["text"], (note["id"], s["code"])
        for x in out["excluded"]:
            assert text[x["start"]:x["end"]] == x["text"]
    engine = make_engine(url)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(AuditRecord).where(AuditRecord.kind == "suggest")) \
            >= len(notes)
        assert audit.verify(s).ok
    engine.dispose()


@pytest.mark.slow
def test_fhir_with_the_real_pipeline(real: tuple[TestClient, dict[str, str], str]) -> None:
    client, keys, _ = real
    note = next(n for n in dev_notes() if n.get("setting") == "outpatient")
    text = str(note["text"])
    body = {"resourceType": "Parameters", "parameter": [{"name": "documentReference", "resource": {
        "resourceType": "DocumentReference", "status": "current",
        "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}}],
    }}]}
    r = client.post("/fhir/r4/DocumentReference/$suggest-codes", json=body, headers=auth(keys["ehr"]))
    assert r.status_code == 200, r.text[:300]
    resources = [p["resource"] for p in r.json()["parameter"] if "resource" in p]
    assert any(res["resourceType"] == "Condition" for res in resources)
    for res in resources:
        for ext in res["extension"]:
            if ext["url"].endswith(":evidence"):
                parts = {x["url"]: x for x in ext["extension"]}
                assert text[parts["start"]["valueInteger"]:parts["end"]["valueInteger"]] == parts["text"]["valueString"]
