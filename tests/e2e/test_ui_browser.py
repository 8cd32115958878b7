"""The review UI in a real browser: `notecoder serve` with the real pipeline, a user and an API key made with
the CLI, one suggest request, then Chromium (Playwright) signs in, opens the request, sees the highlighted
evidence, accepts one suggestion, rejects another and finalizes; the API and `notecoder audit verify` confirm.

Chromium comes from the system package (/usr/bin/chromium; `.ci/run` installs it): Playwright never downloads
a browser here. Without it the test fails, it does not skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tests.e2e.serving import REPO, serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PASSWORD = "s3cret-coder-pass"
# Markup in the note must come out as text: a dialog from it would fail the test.
NOTE = (
    "Chief complaint: follow-up. <script>alert('note')</script>\n"
    "History: denies chest pain.\n"
    "Assessment and Plan:\n"
    "1. Essential hypertension, well controlled. Continue lisinopril.\n"
    "2. Type 2 diabetes mellitus without complications. Continue metformin.\n"
)


@dataclass
class Server:
    base: str
    env: dict[str, str]
    log: Path
    screenshots: Path


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def server(sqlite_engine: Engine, codebook_sessions: sessionmaker[Session],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("ui-serve")
    # A copy of the session's loaded code-set database: serve finds the code sets and skips loading them.
    with sqlite_engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    assert sqlite_engine.url.database
    shutil.copyfile(sqlite_engine.url.database, data_dir / "notecoder.db")
    env = {**os.environ, "NOTECODER_DATA_DIR": str(data_dir), "NOTECODER_USE_ENCODER": "false",
           "NOTECODER_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
    env.pop("NOTECODER_DATABASE_URL", None)
    env.pop("NOTECODER_SESSION_SECRET", None)
    log = data_dir / "server.log"
    with serving([], env, log, ready_within=240) as base:
        yield Server(base=base, env=env, log=log, screenshots=data_dir)


@pytest.mark.slow
@pytest.mark.browser
def test_coder_reviews_a_request_in_chromium(server: Server) -> None:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: install Debian's chromium package (see .ci/run)"
    from playwright.sync_api import expect, sync_playwright

    made = cli(server.env, "user", "create", "--username", "coder1", "--role", "coder", "--password-stdin",
               stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    made = cli(server.env, "apikey", "create", "--name", "ehr-e2e", "--role", "ehr")
    assert made.returncode == 0, made.stderr
    ehr_key = made.stdout.strip().splitlines()[-1]
    made = cli(server.env, "apikey", "create", "--name", "coder-e2e", "--role", "coder")
    coder_key = made.stdout.strip().splitlines()[-1]

    r = httpx.post(f"{server.base}/v1/suggest", headers={"Authorization": f"Bearer {ehr_key}"}, timeout=60,
                   json={"text": NOTE, "date_of_service": "2026-05-01", "note_id": "e2e-1",
                         "patient": {"age": 61, "sex": "female"}})
    assert r.status_code == 200, r.text
    suggestion = r.json()
    rid = suggestion["request_id"]
    assert len(suggestion["suggestions"]) >= 2, "the canned note gives at least two suggestions"
    first, second = suggestion["suggestions"][:2]
    first_label, second_label = (f"{s['system']}:{s['code']}" for s in (first, second))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1000})
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            failed: list[str] = []
            page.on("requestfailed", lambda req: failed.append(req.url))

            page.goto(f"{server.base}/ui/")
            expect(page).to_have_url(f"{server.base}/ui/login?next=%2Fui%2F")
            page.get_by_label("Username").fill("coder1")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page).to_have_url(f"{server.base}/ui/")
            row = page.locator("table.worklist tbody tr").filter(has_text=rid)
            expect(row).to_contain_text("e2e-1")
            expect(row).to_contain_text("open")
            page.screenshot(path=str(server.screenshots / "worklist.png"), full_page=True)
            row.get_by_role("link").click()
            expect(page).to_have_url(f"{server.base}/ui/requests/{rid}")

            # The note is shown verbatim (markup as text) with the evidence of each suggestion marked.
            assert page.locator("#note").text_content() == NOTE
            for s in (first, second):
                label = f"{s['system']}:{s['code']}"
                marks = page.locator(f'#note mark[data-codes~="{label}"]')
                assert marks.count() >= 1, label
                marked = "".join(marks.all_text_contents())
                for e in s["evidence"]:
                    assert e["text"] in marked, (label, e["text"])
            color = page.locator("#note mark[data-code]").first.evaluate("m => getComputedStyle(m).backgroundColor")
            assert color not in ("rgba(0, 0, 0, 0)", "transparent"), "the stylesheet did not load"

            page.locator(f'li.suggestion[data-codes="{first_label}"] label.accept').click()
            page.locator(f'li.suggestion[data-codes="{second_label}"] label.reject').click()
            page.get_by_label("Finalize (closes the encounter)").check()
            page.screenshot(path=str(server.screenshots / "review-before-save.png"), full_page=True)
            page.get_by_role("button", name="Save review").click()

            expect(page.locator(".msg-ok")).to_have_text("Saved revision 1.")
            expect(page.locator("#review-status")).to_have_text("final")
            expect(page.locator(f'li.suggestion[data-codes="{first_label}"] [data-status]')).to_have_text("accepted")
            expect(page.locator(f'li.suggestion[data-codes="{second_label}"] [data-status]')).to_have_text("rejected")
            expect(page.locator(f'input[name="d:{first_label}"][value="accept"]')).to_be_disabled()
            expect(page.get_by_role("button", name="Save review")).to_have_count(0)
            page.screenshot(path=str(server.screenshots / "review-final.png"), full_page=True)
            assert dialogs == [] and failed == []
        finally:
            browser.close()

    got = httpx.get(f"{server.base}/v1/suggestions/{rid}", headers={"Authorization": f"Bearer {coder_key}"},
                    timeout=30).json()
    status = {f"{c['system']}:{c['code']}": c["status"] for c in got["review"]["codes"]}
    assert got["review"]["status"] == "final" and got["review"]["revision"] == 1
    assert status[first_label] == "accepted" and status[second_label] == "rejected"
    assert all(v == "pending" for k, v in status.items() if k not in (first_label, second_label))
    assert [(r["principal"], r["final"]) for r in got["reviews"]] == [("user:coder1", True)]
    verified = cli(server.env, "audit", "verify")
    assert verified.returncode == 0 and verified.stdout.strip() == "ok 2 records", verified.stdout + verified.stderr
    # The note never reaches the server log.
    assert "lisinopril" not in server.log.read_text()
