"""Schemathesis against the app's own OpenAPI schema, on a real uvicorn with a fake engine:
a bounded number of generated requests per operation, none answered with a 5xx or off-schema.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from service.app import create_app
from service.config import Settings
from tests.support import FakeEngine, fake_server

LIMITS = {"max_body_bytes": 65_536, "max_image_pixels": 10_000}
# The schema the server below publishes, read without starting it: pytest collects the
# parametrized cases before any fixture runs.
schema = schemathesis.openapi.from_dict(
    create_app(Settings(**LIMITS), engine=FakeEngine()).openapi()  # type: ignore[arg-type]
)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fake_server(**LIMITS) as url:
        yield url


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_documented_answers_and_never_a_5xx(case, url):
    response = case.call(base_url=url)
    # Schema-valid is not image-valid: random "binary" bytes are rightly a 400, so that one
    # check (a valid request must be accepted) does not apply to an image upload.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
