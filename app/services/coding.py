"""Runs the pipeline on one note and records it: suggestion run, stored note, one audit record."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import TYPE_CHECKING

from app import audit
from app.auth import Principal
from app.errors import ApiError
from app.metrics import Metrics
from app.models import SuggestionRun, utcnow
from app.notes import NoteStore
from app.schemas import SuggestRequest, SuggestResponse
from app.services.storage import write_session
from app.settings import Settings
from nlp.types import CodingRequest, CodingResult, Patient

if TYPE_CHECKING:
    from app.deps import RuntimeLike

# Readiness codes this note: it exercises sections, mentions, assertions, linking and ranking.
CANNED_NOTE = (
    "Assessment and Plan:\n"
    "1. Essential hypertension, well controlled. Continue lisinopril.\n"
    "2. Type 2 diabetes mellitus without complications. Continue metformin.\n"
)


def check_note(text: str, max_chars: int) -> None:
    """The input rules every entry point (JSON, FHIR) shares."""
    if not text.strip():
        raise ApiError("empty_note", "the note text is empty; send the clinical note in `text`")
    if "\x00" in text:
        raise ApiError("invalid_encoding", "the note contains NUL characters (binary data); send plain text")
    if len(text) > max_chars:
        raise ApiError(
            "note_too_large",
            f"the note has {len(text)} characters, more than the limit of {max_chars}; "
            "split it into smaller notes or use the `notecoder batch` command",
        )


class Coder:
    """The coding service: one per process, shared by all request threads."""

    def __init__(self, settings: Settings, runtime: RuntimeLike, notes: NoteStore, metrics: Metrics) -> None:
        self.settings = settings
        self.runtime = runtime
        self.notes = notes
        self.metrics = metrics
        # Pipeline components (spaCy, ConText, matchers) are not documented as thread-safe and the work is
        # CPU-bound under the GIL anyway: one note at a time per process; scale with --workers.
        self._lock = threading.Lock()
        self.ready_at: float | None = None
        self.ready_error: str = ""

    def code(self, request: CodingRequest) -> CodingResult:
        with self._lock:
            return self.runtime.pipeline.code(request)

    def check_ready(self, max_age_s: float = 30.0) -> bool:
        """Code the canned note unless that succeeded within `max_age_s`; remember the outcome."""
        if self.ready_at is not None and time.monotonic() - self.ready_at < max_age_s:
            return True
        result = self.code(CodingRequest(text=CANNED_NOTE, patient=Patient(age=60, sex="female")))
        if not result.suggestions:
            self.ready_error = "the canned readiness note produced no suggestions"
            self.ready_at = None
            return False
        self.ready_error = ""
        self.ready_at = time.monotonic()
        return True

    def suggest(self, body: SuggestRequest, principal: Principal, request_id: str,
                source: str = "api") -> SuggestResponse:
        check_note(body.text, self.settings.max_note_chars)
        started = time.perf_counter()
        result = self.code(body.to_coding_request())
        response = SuggestResponse.from_result(result, request_id, note_id=body.note_id)
        latency_ms = (time.perf_counter() - started) * 1000.0
        self.record(body, response, principal, latency_ms, source)
        for s in response.suggestions:
            self.metrics.suggestions.labels(s.system).inc()
        return response

    def record(self, body: SuggestRequest, response: SuggestResponse, principal: Principal, latency_ms: float,
               source: str) -> None:
        """Persist the run, the note (per retention) and its audit record in one transaction."""
        note_sha = hashlib.sha256(body.text.encode("utf-8")).hexdigest()
        now = utcnow()
        response_json = response.model_dump_json()
        data = {
            "source": source,
            "note_sha256": note_sha,
            "note_chars": len(body.text),
            "note_id": body.note_id,
            "setting": body.setting,
            "date_of_service": body.date_of_service.isoformat() if body.date_of_service else None,
            "patient": {"age": body.patient.age, "sex": body.patient.sex},
            "code_systems": list(dict.fromkeys(body.code_systems)),
            "model_version": response.model_version,
            "rules_version": response.rules_version,
            "codeset_versions": dict(response.codeset_versions),
            "suggestions": [{"system": s.system, "code": s.code, "score": s.score, "rank": s.rank}
                            for s in response.suggestions],
            "excluded": [{"reason": x.reason, "candidate_codes": x.candidate_codes} for x in response.excluded],
            "latency_ms": round(latency_ms, 2),
        }
        with write_session(self.runtime.engine) as session:
            session.add(SuggestionRun(
                request_id=response.request_id, created_at=now, principal=principal.label, note_id=body.note_id,
                note_sha256=note_sha, note_chars=len(body.text), setting=body.setting,
                date_of_service=body.date_of_service, response_json=response_json,
                status="open", revision=0,
            ))
            self.notes.save(session, response.request_id, body.text, now)
            audit.append(session, kind="suggest", request_id=response.request_id, principal=principal.label,
                         data=data, now=now)

