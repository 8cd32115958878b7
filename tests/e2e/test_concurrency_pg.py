"""Several uvicorn worker processes on the real PostgreSQL: 400 concurrent suggest requests give exactly
400 audit records in one unbroken chain, and tampering with one row makes `notecoder audit verify` name it.

The workers run the keyword pipeline (tests/api/support.py): what is under test is the serialization of
the audit chain across processes, which does not depend on how codes are found, and four copies of the
real model would not fit the CI machine's two cores within the test's time budget.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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
from codebooks.bootstrap import prepare_database
from codebooks.db import make_engine
from tests.api.support import auth, keyword_runtime, make_keys

REPO = Path(__file__).resolve().parents[2]
WORKERS = 4
REQUESTS = 400
NOTE = "Assessment: Type 2 diabetes mellitus with diabetic polyneuropathy. Essential hypertension. Venipuncture."


def create_keyword_app() -> FastAPI:
    """Uvicorn factory run in each worker: settings from the environment, the keyword pipeline."""
    return create_app(Settings(), runtime_factory=lambda s: keyword_runtime(s.resolved_database_url))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(pg_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    engine = make_engine(pg_database_url)
    prepare_database(engine)  # code sets once, before the workers start (as `notecoder serve` does)
    key = make_keys(engine)["ehr"]
    engine.dispose()
    port = free_port()
    log = tmp_path_factory.mktemp("uvicorn") / "server.log"
    env = {**os.environ, "NOTECODER_DATABASE_URL": pg_database_url, "NOTECODER_LOG_LEVEL": "WARNING",
           "NOTECODER_DATA_DIR": str(log.parent)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.e2e.test_concurrency_pg:create_keyword_app", "--factory",
             "--workers", str(WORKERS), "--host", "127.0.0.1", "--port", str(port), "--app-dir", str(REPO),
             "--no-access-log"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the workers did not become ready in 90 s"
            time.sleep(0.5)
        # Give the remaining workers their start-up: requests must be spread over all of them.
        time.sleep(3)
        yield base, key
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def fire(base: str, key: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, headers=auth(key), timeout=120, limits=limits) as client:
        return await asyncio.gather(*(
            client.post("/v1/suggest", json={"text": f"{NOTE} Visit {i}.", "note_id": f"n{i}"}) for i in range(n)
        ))


@pytest.mark.slow
@pytest.mark.postgres
def test_concurrent_suggests_on_postgres_keep_one_unbroken_chain(
    server: tuple[str, str], pg_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, key = server
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
