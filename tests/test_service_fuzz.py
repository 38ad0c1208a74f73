"""Schemathesis fuzzing of the service against its own OpenAPI schema, in process over ASGI.

Every operation in the schema gets schema-valid and schema-invalid requests (Schemathesis'
examples, coverage and fuzzing phases, positive and negative data). Each response must not be
a 5xx, must carry a status code the schema declares for that operation, must match the declared
body schema and content type, and invalid input must be rejected with a 4xx. Derandomized, so
every run sends the same requests.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from serving.app import create_app
from serving.config import ServiceSettings

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

MAX_EXAMPLES = 20  # generated cases per operation and data mode; the coverage phase adds its boundary cases
TOKEN = "fuzz-admin-token-0123456789"
SETTINGS = ServiceSettings(admin_token=TOKEN)
CASES: collections.Counter[str] = collections.Counter()
STATUSES: collections.Counter[int] = collections.Counter()

# The schema does not depend on the artifacts, so it is read from an app that has none (nothing
# starts); the requests go to `fuzz_app`, which serves the small world.
schema = schemathesis.openapi.from_dict(
    create_app(Path("/nonexistent/manifest.json"), settings=SETTINGS).openapi_schema.to_schema()
)
# Invalid input that is also longer than the URL or body limit is rejected by the limit.
rejection = schema.config.checks.negative_data_rejection
rejection.expected_statuses = [*rejection.expected_statuses, "413", "414"]


@pytest.fixture(scope="module")
def fuzz_app(served_world):
    return create_app(served_world.manifest_path, poll_interval_s=3600, settings=SETTINGS)


@pytest.fixture(scope="module", autouse=True)
def report_cases(request):
    yield
    if CASES:
        documented = {f"{op.method.upper()} {op.path}" for op in (r.ok() for r in schema.get_all_operations())}
        per_operation = ", ".join(f"{op} {n}" for op, n in sorted(CASES.items()) if op in documented)
        other = sum(n for op, n in CASES.items() if op not in documented)
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(STATUSES.items()))
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(
                f"\nschemathesis: {sum(CASES.values())} requests ({per_operation}; {other} with undocumented methods);"
                f" statuses {statuses}"
            )


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)
def test_every_operation_conforms_to_its_schema_and_never_fails(case, fuzz_app):
    headers = {"Authorization": f"Bearer {TOKEN}"} if case.path.startswith("/admin") else None
    # A request can be schema-valid and still name a city or a tag that does not exist, or leave
    # out the city a profile-only request needs: that is a 400/404 naming the field, so "valid
    # data is accepted" does not hold by design. Every other built-in check runs.
    # The schema was read without an app (above): send this case, and the probes some checks
    # derive from it (e.g. the same request without the token), to the app serving the world.
    case.operation.app = case.operation.schema.app = fuzz_app
    CASES[f"{case.method} {case.path}"] += 1
    response = case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
    STATUSES[response.status_code] += 1
