"""Error catalogue of the HTTP API (stable codes, HTTP statuses) and the handlers that give every error
one JSON shape: `{"error": {"code", "message", "request_id"}}`.

Codes are part of the API: clients branch on them, so never rename one. Messages say what to do and never
carry note text (validation errors drop the offending input).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from codebooks.errors import CodebookError
from nlp.errors import NlpError

log = logging.getLogger("notecoder.api")


@dataclass(frozen=True)
class ErrorKind:
    code: str
    status: int
    description: str


CATALOGUE: dict[str, ErrorKind] = {
    k.code: k
    for k in (
        ErrorKind("invalid_request", 422, "The body or a parameter does not match the schema; see `details`."),
        ErrorKind("invalid_json", 400, "The body is not well-formed JSON."),
        ErrorKind("invalid_encoding", 400, "The body or an attachment is not UTF-8 text."),
        ErrorKind("unsupported_media_type", 415, "The Content-Type is not one this route accepts."),
        ErrorKind("empty_note", 422, "The note text is empty or only whitespace."),
        ErrorKind("note_too_large", 413, "The note exceeds max_note_chars; split it or use the batch command."),
        ErrorKind("body_too_large", 413, "The request body exceeds the size limit."),
        ErrorKind("unauthorized", 401, "No valid API key (Authorization: Bearer <key>)."),
        ErrorKind("forbidden", 403, "The key's role may not use this route."),
        ErrorKind("not_found", 404, "No such route."),
        ErrorKind("method_not_allowed", 405, "The route does not accept this method."),
        ErrorKind("unknown_code_system", 404, "The code system is not one of icd10cm, cpt, hcpcs."),
        ErrorKind("code_not_found", 404, "The code is not in the code-set version in force."),
        ErrorKind("codeset_not_loaded", 404, "No version of the code system is loaded; an admin can import one."),
        ErrorKind("suggestion_not_found", 404, "No suggest request with this request_id."),
        ErrorKind("conflicting_decisions", 422, "A review names the same code with two different actions."),
        ErrorKind("code_not_suggested", 422, "Accept/reject names a code that was not suggested; use `add`."),
        ErrorKind("unknown_code", 422, "An added code is not in the code-set version in force."),
        ErrorKind("review_conflict", 409, "The review was based on an older revision; reload and resubmit."),
        ErrorKind("review_closed", 409, "A final review closed this encounter; no further changes."),
        ErrorKind("invalid_fhir", 422, "The FHIR payload is not a valid R4 Parameters/DocumentReference."),
        ErrorKind("not_ready", 503, "The service is still loading its code sets and model."),
        ErrorKind("pipeline_error", 422, "The coding pipeline rejected the note."),
        ErrorKind("internal_error", 500, "An unexpected error; the request_id identifies it in the server log."),
    )
}


class ApiError(Exception):
    """An error the API answers with its catalogue status and code."""

    def __init__(self, code: str, message: str, *, details: list[dict[str, Any]] | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.status = status or CATALOGUE[code].status


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_payload(code: str, message: str, request_id: str | None,
                  details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details:
        body["details"] = details
    return {"error": body}


def error_response(request: Request, code: str, message: str, status: int,
                   details: list[dict[str, Any]] | None = None) -> JSONResponse:
    renderer = getattr(request.app.state, "error_renderer", None)
    if renderer is not None:
        custom = renderer(request, code, message, status)
        if custom is not None:
            return custom
    return JSONResponse(error_payload(code, message, request_id_of(request), details), status_code=status)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Pydantic puts the offending input (possibly the whole note) in each error: keep only where and why.
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]


def _validation_code(details: list[dict[str, Any]]) -> str:
    if any(d["type"] == "json_invalid" for d in details):
        return "invalid_json"
    return "invalid_request"


_STATUS_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                 413: "body_too_large", 415: "unsupported_media_type", 400: "invalid_json"}

# Statuses the catalogue uses for codebook and pipeline errors that carry a `.code`.
_CODEBOOK_STATUS = {"unknown_code_system": 404, "code_not_found": 404, "codeset_not_loaded": 404}
# Pipeline errors are about the note or request (422) unless they say the installation is broken.
_NLP_SERVER_ERRORS = {"resource_error", "pipeline_order"}


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into the one JSON shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.code, exc.message, exc.status, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        whole_body = bool(details) and all(d["loc"] == ["body"] for d in details)
        if media and media != "application/json" and not media.endswith("+json") and whole_body:
            # FastAPI does not parse a body that is not declared JSON and reports it as a type error.
            return error_response(request, "unsupported_media_type",
                                  f"send the body as application/json (got {media})", 415)
        code = _validation_code(details)
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p != "body") or "body"
        message = ("the body is not valid JSON" if code == "invalid_json"
                   else f"{where}: {first['msg']}" + (f" (and {len(details) - 1} more)" if len(details) > 1 else ""))
        return error_response(request, code, message, CATALOGUE[code].status, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "invalid_request" if exc.status_code < 500 else "internal_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 400:
            # FastAPI answers 400 when it cannot decode the body at all (e.g. bytes that are not UTF-8).
            code, message = "invalid_encoding", "the body could not be decoded; send UTF-8 JSON"
        response = error_response(request, code, message, exc.status_code)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(CodebookError)
    async def _codebook(request: Request, exc: CodebookError) -> JSONResponse:
        return error_response(request, exc.code, exc.message, _CODEBOOK_STATUS.get(exc.code, 422))

    @app.exception_handler(NlpError)
    async def _nlp(request: Request, exc: NlpError) -> JSONResponse:
        if exc.code in _NLP_SERVER_ERRORS:
            log.error("pipeline error %s on %s request_id=%s", exc.code, request.url.path, request_id_of(request))
            return error_response(request, exc.code, "the coding pipeline is misconfigured; see the server log", 500)
        return error_response(request, exc.code, exc.message, 422)
