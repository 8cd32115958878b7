"""OpenAPI descriptions of the error responses every route shares."""

from __future__ import annotations

from typing import Any

from app.errors import CATALOGUE
from app.schemas import ErrorResponse


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for `statuses`, each listing the catalogue codes it may carry."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        codes = sorted(k.code for k in CATALOGUE.values() if k.status == status)
        example_code = codes[0] if codes else "invalid_request"
        out[status] = {
            "model": ErrorResponse,
            "description": "Error codes: " + ", ".join(codes),
            "content": {"application/json": {"example": {"error": {
                "code": example_code, "message": CATALOGUE[example_code].description if codes else "",
                "request_id": "3f0c1d0e9b2a4c55a1e0f7d7c2b9a811"}}}},
        }
    return out
