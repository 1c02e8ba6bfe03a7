"""schemathesis against the served OpenAPI document: no 5xx, no undocumented status, no
response that breaks its schema. Bounded: a few examples per operation."""

from __future__ import annotations

import base64

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from server_bundles import PASSWORD
from server_harness import fresh_pg_database, start_server

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 12
schemathesis.serializer.alias("application/gzip", "application/octet-stream")  # bundle uploads are raw bytes


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_server(request, tmp_path):
    if request.param == "sqlite":
        yield from start_server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "data", "sqlite")
        return
    with fresh_pg_database() as url:
        yield from start_server(url, tmp_path / "data", "postgresql")


def test_openapi_document_holds(fresh_server):
    srv = fresh_server
    _, token = srv.terminal()
    terminal_auth = {"Authorization": f"Bearer {token}"}
    user_auth = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}
    schema = schemathesis.openapi.from_url(srv.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11
    for operation in operations:
        check(operation, srv.url, terminal_auth if "terminal" in (operation.tags or []) else user_auth)


def check(operation, base_url: str, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)

    run()
