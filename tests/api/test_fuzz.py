"""Bad input answers 4xx, never 500, and every answer is in the OpenAPI document.

First the cases a schema-driven fuzzer found (NUL bytes in cursors and ids, ``events?after=`` past the
32-bit ``seq``), then Schemathesis itself against the app's own OpenAPI document: a bounded number of
examples per operation, valid and invalid requests, derandomized so that CI runs the same requests each time.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from factories import digits_arrays, npz_bytes
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from services_app import new_key
from test_files_api import upload
from test_jobs_api import DIGITS

from api.app import create_app
from distill.settings import Settings

# ---------------------------------------------------------------------------------- what the fuzzer found


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/jobs/job_%00x", "job_id"),
        ("/v1/files/file_%00x", "file_id"),
        ("/v1/jobs/job_%00x/events", "job_id"),
        ("/v1/jobs/job_x/artifacts/model%00.safetensors", "name"),
        ("/v1/jobs?after=job_%00", "after"),
        ("/v1/files?after=%00", "after"),
        ("/v1/jobs/job_x/events?after=2147483648", "after"),
        ("/v1/jobs/job_x/events?after=99999999999999999999999", "after"),
        ("/v1/jobs/job_x/events?after=-1", "after"),
        ("/v1/jobs?limit=1000000", "limit"),
        (f"/v1/jobs/{'j' * 65}", "job_id"),
    ],
)
def test_nul_bytes_and_out_of_range_parameters_answer_422(client, acme, path, field):
    response = client.get(path, headers=acme)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**DIGITS, "name": "a\x00b"}, "name"),
        ({"data": {"train": {"file": "file_\x00"}}}, "data.train.file"),
        ({**DIGITS, "teacher": {"job": "job_\x00"}}, "teacher.job"),
    ],
)
def test_nul_bytes_in_a_json_body_answer_422_naming_the_field(client, acme, body, field):
    response = client.post("/v1/jobs", headers=acme, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert client.get("/v1/jobs", headers=acme).json()["data"] == []


@pytest.mark.parametrize("filename", ["a\x00.npz", "x" * 300 + ".npz", "new\nline.npz"])
def test_bad_upload_filenames_answer_422(client, acme, filename):
    response = client.post(
        "/v1/files", headers=acme, files={"file": (filename, b"x,label\n1,0\n")}, data={"purpose": "dataset"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "file"


def test_the_openapi_document_lists_every_status(client):
    paths = client.get("/openapi.json").json()["paths"]
    statuses = {
        (method.upper(), path): set(operation["responses"])
        for path, methods in paths.items()
        for method, operation in methods.items()
    }
    common = {"401", "422", "429", "503"}
    assert statuses[("POST", "/v1/jobs")] >= common | {"201", "400", "409"}
    assert statuses[("POST", "/v1/files")] >= common | {"201", "400", "409", "413"}
    assert statuses[("GET", "/v1/jobs/{job_id}")] >= common | {"200", "404"}
    assert statuses[("POST", "/v1/jobs/{job_id}/cancel")] >= common | {"200", "404", "409"}
    assert statuses[("GET", "/v1/jobs/{job_id}/artifacts/{name}")] >= common | {"200", "307", "404"}
    error = paths["/v1/jobs"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "Retry-After" in paths["/v1/jobs"]["get"]["responses"]["429"]["headers"]


# ------------------------------------------------------------------------------------------- Schemathesis


@pytest.fixture
def fuzz_app(api_settings: Settings) -> Iterator[FastAPI]:
    app = create_app(api_settings.model_copy(update={"rate_limit": ""}))  # the fuzzer is one busy key
    yield app
    app.state.engine.dispose()


@pytest.fixture
def fuzz_key(api_settings: Settings) -> str:
    return new_key(api_settings, "fuzz")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 15
"""Per operation and mode: (13 operations + 7 again with real ids) x 2 modes x 15 examples, about 45 s
here (the CI budget is 90 s)."""


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzed_requests_get_no_5xx_and_only_documented_answers(fuzz_app, fuzz_key, mode):
    # Schemathesis' own pytest loader does not run under pytest 9 yet: the same strategies, driven here.
    api = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    headers = {"Authorization": f"Bearer {fuzz_key}"}
    # Real objects too: a job and a file of this key's, so that requests get past "no such job" (an
    # out-of-range events cursor only reached the database for a job that exists).
    with TestClient(fuzz_app) as client:
        x, y = digits_arrays()
        file_id = upload(client, headers, "d.npz", npz_bytes(x[:40], y[:40])).json()["id"]
        job_id = client.post("/v1/jobs", headers=headers, json=DIGITS).json()["id"]
    failures: list[str] = []
    operations = 0
    runs = [(result.ok(), None) for result in api.get_all_operations()]
    runs += [
        (operation, {"job_id": job_id} if "{job_id}" in operation.path else {"file_id": file_id})
        for operation, _ in list(runs)
        if "{job_id}" in operation.path or "{file_id}" in operation.path
    ]
    for operation, known in runs:
        operations += 1

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=known))
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            exercise()
        except Unsatisfiable:
            # nothing to make invalid (/healthz, /readyz take no input): no negative case exists
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        except Exception as error:  # every operation runs; the failures are reported together
            failures.append(f"{operation.label} {known or ''}: {error}")
    assert operations >= 19
    assert not failures, "\n\n".join(failures)


def test_an_unreachable_database_answers_503_with_retry_after(api_settings, acme):
    # A real server that is not there: a closed port on loopback.
    from helpers import free_port

    url = api_settings.database_url.rsplit("@", 1)[0] + f"@127.0.0.1:{free_port()}/nowhere"
    app = create_app(api_settings.model_copy(update={"database_url": url}))
    with TestClient(app) as client:
        for path in ("/readyz", "/v1/jobs"):
            response = client.get(path, headers=acme)
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "5"
            assert response.json()["error"]["code"] == "unavailable"
    app.state.engine.dispose()
