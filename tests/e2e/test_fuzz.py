"""Schemathesis against the app's own OpenAPI schema, on a real uvicorn with a fake engine:
a bounded number of generated requests per operation, with every check (among them: a
schema-valid request is accepted, a schema-invalid one refused, never a 5xx or an answer off
the schema).

The schema says where a body is an image (``image/*`` media types, ``contentMediaType`` on
base64 strings); schemathesis generates bytes and strings from the JSON Schema alone, so the
strategies registered here make those images, as a client would send them.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

from service.app import create_app
from service.config import Settings
from service.imaging import MEDIA_TYPES
from tests.support import FakeEngine, fake_server

LIMITS = {"max_body_bytes": 65_536, "max_image_pixels": 10_000}


def encoded(fmt: str, width: int, height: int, color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format=fmt)
    return buf.getvalue()


def images(fmt: str) -> st.SearchStrategy[bytes]:
    """Small real images of ``fmt``: 16 of them fit a request under LIMITS."""
    side = st.integers(1, 16)
    color = st.tuples(*[st.integers(0, 255)] * 3)
    return st.builds(encoded, st.just(fmt), side, side, color)


for _fmt, _media in MEDIA_TYPES.items():
    if _fmt != "MPO":  # Pillow writes no MPO; image/jpeg is JPEG's
        schemathesis.openapi.media_type(_media, images(_fmt))
# The only base64 ("byte") strings in the schema are the /v2 images.
schemathesis.openapi.format(
    "byte",
    st.sampled_from(["PNG", "JPEG"]).flatmap(images).map(lambda b: base64.b64encode(b).decode()),
)
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
    case.validate_response(response)
