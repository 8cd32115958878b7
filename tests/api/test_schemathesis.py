"""Property-based run of every operation in the OpenAPI document (schemathesis): no input gives a 5xx,
and every 4xx JSON answer has the error shape (OperationOutcome under /fhir/)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from app.main import create_app
from app.settings import Settings
from tests.api.conftest import Api

# Only the document is needed here: create_app builds routes without touching a database.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
# Valid and schema-violating inputs both; no example database, so every run starts from the same seed budget.
schema.config.generation.update(modes=list(GenerationMode), database="none")


@schema.parametrize()
@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gives_a_server_error(case: schemathesis.Case, api: Api) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    kwargs["headers"] = {**(kwargs.get("headers") or {}), **api.headers("admin")}
    response = api.client.request(**kwargs)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    if response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
        body = response.json()
        if case.path.startswith("/fhir/"):
            assert body["resourceType"] == "OperationOutcome"
        else:
            assert set(body["error"]) >= {"code", "message", "request_id"}
            assert body["error"]["request_id"] == response.headers["x-request-id"]
