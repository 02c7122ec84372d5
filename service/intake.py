"""What both protocols do before the model: receive a body under its own limits, decode images.

A body is read under the uploads gate and ``BODY_TIMEOUT_SECONDS`` (a slow upload holds an
upload place, never one of the model's ``MAX_QUEUE_SIZE`` places); images are decoded one
after another in a worker thread, so a request of N images holds one image's decode memory at
a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import numpy as np

from service.batching import BatchResult
from service.errors import RequestTimeout, ServiceError
from service.imaging import decode_and_preprocess
from service.state import ServiceState


async def receive_body(state: ServiceState, read: Callable[[], Awaitable[bytes]]) -> bytes:
    """``await read()`` holding an upload place, within BODY_TIMEOUT_SECONDS (else 408)."""
    assert state.uploads is not None
    timeout = state.settings.body_timeout_seconds
    async with state.uploads.admit():
        try:
            with anyio.fail_after(timeout):
                return await read()
        except TimeoutError:
            raise RequestTimeout(
                f"the body did not arrive within {timeout:g} s (BODY_TIMEOUT_SECONDS)"
            ) from None


@dataclass(frozen=True)
class Decoded:
    """Preprocessed images, stacked, and the time decoding and preprocessing took."""

    inputs: np.ndarray
    decode_s: float
    preprocess_s: float


def _decode_all(images: Sequence[bytes | memoryview], state: ServiceState) -> Decoded:
    assert state.manifest is not None
    settings = state.settings
    arrays = []
    decode_s = preprocess_s = 0.0
    for i, data in enumerate(images):
        try:
            array, d, p = decode_and_preprocess(
                data,
                state.manifest.preprocess,
                settings.max_image_pixels,
                settings.max_image_bytes,
                reduced=settings.jpeg_decode == "reduced",
            )
        except ServiceError as exc:
            if len(images) == 1:
                raise
            exc.message = f"image {i}: {exc.message}"  # one request, many images: say which
            raise
        state.metrics.preprocess.observe(d + p)
        arrays.append(array)
        decode_s += d
        preprocess_s += p
    return Decoded(np.stack(arrays), decode_s, preprocess_s)


async def decode_images(images: Sequence[bytes | memoryview], state: ServiceState) -> Decoded:
    """Decode and preprocess ``images`` in a worker thread, in order; errors name the index."""
    return await anyio.to_thread.run_sync(_decode_all, images, state, limiter=state.decode_limiter)


async def decode_and_run(
    images: Sequence[bytes | memoryview], state: ServiceState
) -> tuple[Decoded, list[BatchResult]]:
    """Decode ``images`` and run the model on them (the caller holds an admission place).

    Without batching and with one intra-op thread (the batcher's ``direct`` mode) both run on
    one engine thread in one hand-off; otherwise decoding runs in the decode pool, overlapping
    other requests' model calls, and the batcher forms batches."""
    batcher = state.batcher
    assert batcher is not None
    if batcher.direct:

        def prepare() -> tuple[Decoded, np.ndarray]:
            decoded = _decode_all(images, state)
            return decoded, decoded.inputs

        return await batcher.run_direct(prepare)
    decoded = await decode_images(images, state)
    return decoded, await batcher.submit_many(decoded.inputs)
