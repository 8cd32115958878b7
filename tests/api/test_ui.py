"""The coder review UI through TestClient: login/logout, CSRF, roles, worklist, escaping, reviews via the form.

Apps are built like the API tests' (real SQLite copy of the code sets, keyword pipeline, real services); UI
users are real `app_user` rows.
"""

from __future__ import annotations

import html
import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import audit
from app.auth import create_user, hash_password
from app.main import create_app
from app.models import AuditRecord, User
from app.services.storage import write_session
from app.settings import Settings
from app.ui.session import SECRET_FILE, LoginThrottle
from tests.api.conftest import Api, start_api

PASSWORD = "correct horse battery"
NOTE = "Assessment: Type 2 diabetes mellitus. Essential hypertension. Venipuncture. Denies asthma."


@pytest.fixture(scope="module")
def ui_api(template_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    api_gen = start_api(template_db, tmp_path_factory.mktemp("ui"))
    api = next(api_gen)
    with write_session(api.runtime.engine) as session:
        create_user(session, "alice", "coder", PASSWORD)
        create_user(session, "root", "admin", PASSWORD)
        # A role the UI must refuse: written directly, since create_user only makes coder/admin.
        session.add(User(username="ehr-bot", role="ehr", password_hash=hash_password(PASSWORD)))
    yield api
    next(api_gen, None)


def new_client(api: Api) -> TestClient:
    """A second browser on the same app: its own cookie jar."""
    client = TestClient(api.client.app, raise_server_exceptions=False)
    return client


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "the page has no CSRF field"
    return match.group(1)


def login(client: TestClient, username: str = "alice", password: str = PASSWORD, next_url: str = "/ui/"):  # type: ignore[no-untyped-def]
    page = client.get("/ui/login")
    assert page.status_code == 200
    return client.post("/ui/login", data={"csrf": csrf_of(page.text), "username": username, "password": password,
                                          "next": next_url}, follow_redirects=False)


def suggest(api: Api, text: str = NOTE, note_id: str | None = None) -> str:
    body: dict[str, object] = {"text": text, "date_of_service": "2026-05-01"}
    if note_id is not None:
        body["note_id"] = note_id
    r = api.client.post("/v1/suggest", json=body, headers=api.headers("ehr"))
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


def audit_records(api: Api, rid: str) -> list[AuditRecord]:
    with Session(api.runtime.engine) as s:
        return list(s.scalars(select(AuditRecord).where(AuditRecord.request_id == rid).order_by(AuditRecord.seq)))


# ---- login, logout, CSRF, roles -------------------------------------------------------------------
def test_pages_need_a_login_and_redirect_back_after_it(ui_api: Api) -> None:
    client = new_client(ui_api)
    rid = suggest(ui_api)
    r = client.get(f"/ui/requests/{rid}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/ui/login?next=%2Fui%2Frequests%2F{rid}"
    assert client.get("/ui/", follow_redirects=False).status_code == 303
    r = login(client, next_url=f"/ui/requests/{rid}")
    assert r.status_code == 303 and r.headers["location"] == f"/ui/requests/{rid}"
    assert client.get(f"/ui/requests/{rid}").status_code == 200
    # Off-site or odd targets fall back to the worklist: no open redirect.
    for target in ("https://evil.example/", "//evil.example/ui/", "/ui/../v1/suggest", "/v1/suggest"):
        r = login(new_client(ui_api), next_url=target)
        assert r.status_code == 303 and r.headers["location"] == "/ui/", target


def test_session_cookie_is_signed_httponly_lax_and_rotated_at_login(ui_api: Api) -> None:
    client = new_client(ui_api)
    page = client.get("/ui/login")
    header = page.headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=lax" in header and "path=/ui" in header
    anonymous = client.cookies["notecoder_ui"]
    anonymous_csrf = csrf_of(page.text)
    r = client.post("/ui/login", data={"csrf": anonymous_csrf, "username": "alice", "password": PASSWORD},
                    follow_redirects=False)
    assert r.status_code == 303
    logged_in = client.cookies["notecoder_ui"]
    assert logged_in != anonymous
    assert "httponly" in r.headers["set-cookie"].lower()
    page = client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # A new session id at login (no fixation): the pre-login CSRF token is worthless now.
    assert csrf_of(page.text) != anonymous_csrf
    r = client.post("/ui/logout", data={"csrf": anonymous_csrf}, follow_redirects=False)
    assert r.headers["location"] == "/ui/logout"
    assert client.get("/ui/", follow_redirects=False).status_code == 200
    # A tampered cookie is no session at all.
    body, mac = logged_in.split(".")
    forged = TestClient(ui_api.client.app, cookies={"notecoder_ui": f"{body}.{'0' * len(mac)}"})
    assert forged.get("/ui/", follow_redirects=False).status_code == 303


def test_login_refuses_missing_or_foreign_csrf(ui_api: Api) -> None:
    client = new_client(ui_api)
    client.get("/ui/login")
    r = client.post("/ui/login", data={"username": "alice", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 403
    other = new_client(ui_api)
    foreign = csrf_of(other.get("/ui/login").text)
    r = client.post("/ui/login", data={"csrf": foreign, "username": "alice", "password": PASSWORD},
                    follow_redirects=False)
    assert r.status_code == 403
    assert client.get("/ui/", follow_redirects=False).status_code == 303


def test_wrong_password_api_keys_and_non_ui_roles_cannot_log_in(ui_api: Api) -> None:
    assert login(new_client(ui_api), password="wrong password").status_code == 401
    assert login(new_client(ui_api), username="nobody").status_code == 401
    # API keys are not logins, whatever their role.
    for role in ("ehr", "coder", "admin"):
        key = ui_api.keys[role]
        assert login(new_client(ui_api), username=f"test-{role}", password=key).status_code == 401
        assert login(new_client(ui_api), username=key, password=key).status_code == 401
    client = new_client(ui_api)
    r = login(client, username="ehr-bot")
    assert r.status_code == 403 and "may not use the review UI" in r.text
    assert client.get("/ui/", follow_redirects=False).status_code == 303
    assert login(new_client(ui_api), username="root").status_code == 303


def test_repeated_failed_logins_are_throttled(ui_api: Api) -> None:
    with write_session(ui_api.runtime.engine) as session:
        create_user(session, "carol", "coder", PASSWORD)
    for _ in range(5):
        assert login(new_client(ui_api), username="carol", password="not her password").status_code == 401
    # Past the limit even the right password waits, and says how long.
    r = login(new_client(ui_api), username="carol")
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    # Other accounts are not affected.
    assert login(new_client(ui_api), username="root").status_code == 303


def test_login_throttle_window_and_reset() -> None:
    now = [1000.0]
    throttle = LoginThrottle(limit=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("Dave") == 0
        throttle.failed("Dave")
    assert 0 < throttle.retry_after("dave") <= 61
    now[0] += 61
    assert throttle.retry_after("dave") == 0
    throttle.failed("dave")
    throttle.succeeded("DAVE")
    assert throttle.retry_after("dave") == 0


def test_logout_needs_csrf_and_ends_the_session(ui_api: Api) -> None:
    client = new_client(ui_api)
    assert login(client).status_code == 303
    assert client.post("/ui/logout", data={}, follow_redirects=False).headers["location"] == "/ui/logout"
    assert client.get("/ui/").status_code == 200
    token = csrf_of(client.get("/ui/logout").text)
    r = client.post("/ui/logout", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert "notecoder_ui" not in client.cookies
    assert client.get("/ui/", follow_redirects=False).status_code == 303


def test_deactivating_a_user_ends_their_session(ui_api: Api) -> None:
    with write_session(ui_api.runtime.engine) as session:
        create_user(session, "bob", "coder", PASSWORD)
    client = new_client(ui_api)
    assert login(client, username="bob").status_code == 303
    assert client.get("/ui/").status_code == 200
    with write_session(ui_api.runtime.engine) as session:
        session.execute(update(User).where(User.username == "bob").values(is_active=False))
    assert client.get("/ui/", follow_redirects=False).status_code == 303


# ---- pages --------------------------------------------------------------------------------------
def test_note_text_and_note_id_are_escaped_and_evidence_is_marked(ui_api: Api) -> None:
    text = ("<script>alert('x')</script> Assessment: asthma & \"essential hypertension\". "
            "<img src=x onerror=alert(1)> Type 2 diabetes mellitus.")
    rid = suggest(ui_api, text, note_id="<b>n1</b>")
    client = new_client(ui_api)
    login(client)
    page = client.get(f"/ui/requests/{rid}")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text and "<b>n1</b>" not in page.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text and "&lt;b&gt;n1&lt;/b&gt;" in page.text
    note = re.search(r'<pre class="note" id="note">(.*?)</pre>', page.text, re.S)
    assert note
    marks = re.findall(r'<mark data-code="([^"]+)" data-codes="([^"]+)"[^>]*>(.*?)</mark>', note.group(1))
    assert ("J45.909", "icd10cm:J45.909", "asthma") in marks
    assert ("I10", "icd10cm:I10", "essential hypertension") in marks
    assert ("E11.9", "icd10cm:E11.9", "Type 2 diabetes mellitus") in marks
    # Unmarking the page gives back exactly the note.
    assert html.unescape(re.sub(r"</?mark[^>]*>", "", note.group(1))) == text
    # The worklist escapes the note id too.
    listing = client.get("/ui/")
    assert "&lt;b&gt;n1&lt;/b&gt;" in listing.text and "<b>n1</b>" not in listing.text


def test_excluded_mentions_are_listed_with_reasons(ui_api: Api) -> None:
    rid = suggest(ui_api)
    client = new_client(ui_api)
    login(client)
    page = client.get(f"/ui/requests/{rid}").text
    assert re.search(r'<mark class="excluded" data-reason="negated"[^>]*>asthma</mark>', page)
    table = page.split('class="excluded-list"', 1)[1].split("</table>", 1)[0]
    assert "<q>asthma</q>" in table and "negated" in table and "J45.909" in table


def test_unknown_request_is_a_404_page(ui_api: Api) -> None:
    client = new_client(ui_api)
    login(client)
    r = client.get("/ui/requests/does-not-exist")
    assert r.status_code == 404 and "There is no suggest request" in r.text


def test_note_not_retained_still_shows_suggestions(template_db: Path, tmp_path: Path) -> None:
    gen = start_api(template_db, tmp_path, note_retention_days=0)
    api = next(gen)
    try:
        with write_session(api.runtime.engine) as session:
            create_user(session, "alice", "coder", PASSWORD)
        rid = suggest(api)
        client = new_client(api)
        login(client)
        page = client.get(f"/ui/requests/{rid}").text
        assert 'id="note"' not in page and "The note text is not available" in page
        assert "E11.9" in page and "<q>Type 2 diabetes mellitus</q>" in page
    finally:
        next(gen, None)


def test_worklist_newest_first_with_counts_status_and_pages(template_db: Path, tmp_path: Path) -> None:
    gen = start_api(template_db, tmp_path)
    api = next(gen)
    try:
        with write_session(api.runtime.engine) as session:
            create_user(session, "alice", "coder", PASSWORD)
        rids = [suggest(api, NOTE if i % 2 else "Assessment: pneumonia.", note_id=f"note-{i}") for i in range(27)]
        client = new_client(api)
        login(client)
        first = client.get("/ui/").text
        listed = re.findall(r'href="/ui/requests/([^"]+)"', first)
        assert listed == rids[::-1][:25]
        assert "27 suggest requests" in first and "Page 1 of 2" in first
        row = first.split(f'/ui/requests/{rids[-1]}"', 1)[1].split("</tr>", 1)[0]
        assert "note-26" in row and '<td class="num">1</td>' in row and "badge-open" in row  # pneumonia only
        row = first.split(f'/ui/requests/{rids[-2]}"', 1)[1].split("</tr>", 1)[0]
        assert '<td class="num">3</td>' in row  # E11.9, I10, 36415
        second = client.get("/ui/?page=2").text
        assert re.findall(r'href="/ui/requests/([^"]+)"', second) == rids[::-1][25:]
        assert client.get("/ui/?page=99").text.count("/ui/requests/") == 2  # clamped to the last page
        # Finalize one through the API: it moves to the "final" filter.
        r = api.client.post(f"/v1/suggestions/{rids[0]}/review", json={"final": True}, headers=api.headers("coder"))
        assert r.status_code == 200
        final = client.get("/ui/?status=final").text
        assert re.findall(r'href="/ui/requests/([^"]+)"', final) == [rids[0]] and "badge-final" in final
        assert rids[0] not in client.get("/ui/?status=open").text
    finally:
        next(gen, None)


# ---- reviews through the form ------------------------------------------------------------------
def review_form(client: TestClient, rid: str, **fields: str):  # type: ignore[no-untyped-def]
    page = client.get(f"/ui/requests/{rid}").text
    data = {"csrf": csrf_of(page),
            "expected_revision": re.search(r'name="expected_revision" value="(\d+)"', page).group(1),  # type: ignore[union-attr]
            **fields}
    return client.post(f"/ui/requests/{rid}/review", data=data, follow_redirects=False)


def test_review_round_trip_is_audited_under_the_user(ui_api: Api) -> None:
    rid = suggest(ui_api)
    client = new_client(ui_api)
    login(client)
    r = review_form(client, rid, **{"d:icd10cm:E11.9": "accept", "d:icd10cm:I10": "reject",
                                    "add_system": "icd10cm", "add_code": "Z7984"})
    assert r.status_code == 303 and r.headers["location"] == f"/ui/requests/{rid}?saved=1"
    page = client.get(r.headers["location"]).text
    assert "Saved revision 1." in page
    state = ui_api.client.get(f"/v1/suggestions/{rid}", headers=ui_api.headers("coder")).json()
    assert {f"{c['system']}:{c['code']}": c["status"] for c in state["review"]["codes"]} == {
        "icd10cm:E11.9": "accepted", "icd10cm:I10": "rejected", "cpt:36415": "pending", "icd10cm:Z79.84": "added"}
    assert state["reviews"][0]["principal"] == "user:alice"
    # Radios come back as saved; leaving them as they are sends no decision for them.
    assert re.search(r'name="d:icd10cm:E11.9" value="accept" checked', page)
    assert re.search(r'name="d:icd10cm:I10" value="reject" checked', page)
    assert re.search(r'name="d:icd10cm:Z79.84" value="add" checked', page)
    r = review_form(client, rid, **{"d:icd10cm:E11.9": "accept", "d:icd10cm:I10": "reject",
                                    "d:cpt:36415": "accept", "final": "1"})
    assert r.status_code == 303 and r.headers["location"].endswith("?saved=2")
    records = audit_records(ui_api, rid)
    assert [x.kind for x in records] == ["suggest", "review", "review"]
    assert all(x.principal == "user:alice" for x in records[1:])
    last = json.loads(records[-1].body)
    assert last["final"] is True
    assert last["decisions"] == [{"system": "cpt", "code": "36415", "action": "accept", "reason": None}]
    with Session(ui_api.runtime.engine) as s:
        assert audit.verify(s).ok
    # Final: read-only, and a late submission changes nothing.
    page = client.get(f"/ui/requests/{rid}").text
    assert '<fieldset class="plain" disabled>' in page and "Save review" not in page and 'name="add_code"' not in page
    r = client.post(f"/ui/requests/{rid}/review", data={"csrf": csrf_of(page), "expected_revision": "2",
                                                         "d:icd10cm:I10": "accept"}, follow_redirects=False)
    assert r.status_code == 409 and "already finalized" in r.text
    assert len(audit_records(ui_api, rid)) == 3


def test_stale_revision_is_a_friendly_409_and_changes_nothing(ui_api: Api) -> None:
    rid = suggest(ui_api)
    client = new_client(ui_api)
    login(client)
    page = client.get(f"/ui/requests/{rid}").text
    # Another coder reviews through the API in between.
    r = ui_api.client.post(f"/v1/suggestions/{rid}/review", headers=ui_api.headers("coder"),
                           json={"decisions": [{"system": "icd10cm", "code": "I10", "action": "accept"}]})
    assert r.status_code == 200
    r = client.post(f"/ui/requests/{rid}/review", data={"csrf": csrf_of(page), "expected_revision": "0",
                                                         "d:icd10cm:I10": "reject"}, follow_redirects=False)
    assert r.status_code == 409
    assert "Someone saved a review (revision 1)" in r.text and 'role="alert"' in r.text
    assert re.search(r'name="d:icd10cm:I10" value="accept" checked', r.text)  # the current state is shown
    assert [x.kind for x in audit_records(ui_api, rid)] == ["suggest", "review"]


def test_review_form_needs_csrf_login_and_valid_input(ui_api: Api) -> None:
    rid = suggest(ui_api)
    client = new_client(ui_api)
    login(client)
    r = client.post(f"/ui/requests/{rid}/review", data={"expected_revision": "0", "d:icd10cm:I10": "accept"},
                    follow_redirects=False)
    assert r.status_code == 403 and "not saved" in r.text
    stranger = new_client(ui_api)
    r = stranger.post(f"/ui/requests/{rid}/review", data={"csrf": csrf_of(client.get(f"/ui/requests/{rid}").text),
                                                           "expected_revision": "0", "d:icd10cm:I10": "accept"},
                      follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
    assert review_form(client, rid).status_code == 422  # nothing chosen
    r = review_form(client, rid, add_system="icd10cm", add_code="<x>")
    assert r.status_code == 422 and "<x>" not in r.text
    r = review_form(client, rid, add_system="icd10cm", add_code="Q99.99")
    assert r.status_code == 422 and "cannot add icd10cm Q99.99" in r.text
    r = review_form(client, rid, **{"d:icd10cm:Z00.00": "accept"})  # not on the page: ignored
    assert r.status_code == 422
    assert [x.kind for x in audit_records(ui_api, rid)] == ["suggest"]


def test_workers_share_the_session_secret(tmp_path: Path, ui_api: Api) -> None:
    # Two apps on one data_dir stand for two `serve --workers` processes: a login on one holds on the other.
    settings = Settings(data_dir=ui_api.settings.data_dir, database_url=ui_api.settings.database_url)
    other = create_app(settings, runtime=ui_api.runtime)
    client = new_client(ui_api)
    login(client)
    with TestClient(other, cookies={"notecoder_ui": client.cookies["notecoder_ui"]}) as second:
        assert second.get("/ui/", follow_redirects=False).status_code == 200
    secret = ui_api.settings.data_dir / SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    # Building an app writes nothing (schemathesis builds one just for its OpenAPI document); starting it does.
    fresh = tmp_path / "fresh"
    built = create_app(Settings(data_dir=fresh, database_url=ui_api.settings.database_url), runtime=ui_api.runtime)
    assert not (fresh / SECRET_FILE).exists()
    with TestClient(built):
        assert (fresh / SECRET_FILE).exists()
    # A configured secret replaces the file: cookies signed with the file's secret are not accepted.
    configured = create_app(Settings(data_dir=tmp_path, database_url=ui_api.settings.database_url,
                                     session_secret="x" * 40), runtime=ui_api.runtime)
    with TestClient(configured, cookies={"notecoder_ui": client.cookies["notecoder_ui"]}) as third:
        assert third.get("/ui/", follow_redirects=False).status_code == 303
    assert not (tmp_path / SECRET_FILE).exists()
