"""`notecoder serve --workers 4` on the real PostgreSQL with the real pipeline: 400 concurrent suggest
requests give exactly 400 audit records in one unbroken chain, /metrics sums all workers, and tampering with
one row makes `notecoder audit verify` name it.

The workers run without the encoder (NOTECODER_USE_ENCODER=false): what is under test is the serialization
of the audit chain across processes, and four copies of the encoder would not start on the CI machine's two
cores within the test's time budget. `create_keyword_app` (the tests' keyword pipeline as a uvicorn factory)
is kept for `bench/bench_http.py --pipeline keyword`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.cli import app as cli
from app.main import create_app
from app.models import AuditRecord, SuggestionRun
from app.settings import Settings
from codebooks.db import make_engine
from tests.api.support import auth, keyword_runtime, make_keys
from tests.e2e.serving import serving

WORKERS = 4
REQUESTS = 400
NOTE = "Assessment: Type 2 diabetes mellitus with diabetic polyneuropathy. Essential hypertension. Venipuncture."


def create_keyword_app() -> FastAPI:
    """Uvicorn factory run in each worker: settings from the environment, the keyword pipeline."""
    return create_app(Settings(), runtime_factory=lambda s: keyword_runtime(s.resolved_database_url))


@pytest.fixture(scope="module")
def server(pg_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    engine = make_engine(pg_database_url)
    keys = make_keys(engine)
    engine.dispose()
    data_dir = tmp_path_factory.mktemp("serve")
    env = {**os.environ, "NOTECODER_DATABASE_URL": pg_database_url, "NOTECODER_LOG_LEVEL": "WARNING",
           "NOTECODER_DATA_DIR": str(data_dir), "NOTECODER_USE_ENCODER": "false"}
    with serving(["--workers", str(WORKERS)], env, data_dir / "server.log", ready_within=150) as base:
        # Give the remaining workers their start-up: requests must be spread over all of them.
        time.sleep(5)
        yield base, keys


async def fire(base: str, key: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, headers=auth(key), timeout=120, limits=limits) as client:
        return await asyncio.gather(*(
            client.post("/v1/suggest", json={"text": f"{NOTE} Visit {i}.", "note_id": f"n{i}"}) for i in range(n)
        ))


@pytest.mark.slow
@pytest.mark.postgres
def test_concurrent_suggests_on_postgres_keep_one_unbroken_chain(
    server: tuple[str, dict[str, str]], pg_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, keys = server
    key = keys["ehr"]
    engine = make_engine(pg_database_url)
    with Session(engine) as s:
        before = s.scalar(select(func.count()).select_from(AuditRecord)) or 0

    started = time.perf_counter()
    responses = asyncio.run(fire(base, key, REQUESTS))
    elapsed = time.perf_counter() - started
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == REQUESTS, {s: statuses.count(s) for s in set(statuses)}
    request_ids = {r.json()["request_id"] for r in responses}
    assert len(request_ids) == REQUESTS
    assert all(r.json()["suggestions"] for r in responses)  # the real pipeline coded every note
    # Every worker writes its own metric files; /metrics on any one of them reports the sum.
    metrics = httpx.get(f"{base}/metrics", headers=auth(keys["admin"]), timeout=10).text
    served = [line for line in metrics.splitlines()
              if line.startswith('notecoder_http_requests_total{method="POST",route="/v1/suggest",status="200"}')]
    assert served and float(served[0].rsplit(" ", 1)[1]) == REQUESTS
    print(f"{REQUESTS} concurrent requests on {WORKERS} workers: {elapsed:.1f} s, {REQUESTS / elapsed:.0f} req/s")

    with Session(engine) as s:
        rows = s.execute(select(AuditRecord.seq, AuditRecord.request_id, AuditRecord.body)
                         .where(AuditRecord.seq > before).order_by(AuditRecord.seq)).all()
        assert len(rows) == REQUESTS
        assert [r.seq for r in rows] == list(range(before + 1, before + REQUESTS + 1))
        assert {r.request_id for r in rows} == request_ids
        assert s.scalar(select(func.count()).select_from(SuggestionRun)
                        .where(SuggestionRun.request_id.in_(request_ids))) == REQUESTS
        assert all(json.loads(r.body)["prev_hash"] for r in rows)

    monkeypatch.setenv("NOTECODER_DATABASE_URL", pg_database_url)
    runner = CliRunner()
    result = runner.invoke(cli, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"ok {before + REQUESTS} records"

    victim = rows[REQUESTS // 2]
    with Session(engine) as s, s.begin():
        s.execute(update(AuditRecord).where(AuditRecord.seq == victim.seq)
                  .values(body=victim.body.replace('"setting":"outpatient"', '"setting":"inpatient"')))
    result = runner.invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1
    assert f"record {victim.seq}" in result.output and victim.request_id in result.output
    engine.dispose()
