"""What request handlers read: the app's ``ServiceState``, through ``service_state``.

Apart from both ``app.py`` (which fills the state in) and ``routes.py`` (which reads it), so
neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from fastapi import Request

from service.batching import Batcher, Gate
from service.config import Settings
from service.engines import Engine
from service.errors import NotReady
from service.manifest import Manifest
from service.metrics import Metrics


@dataclass
class ServiceState:
    """Everything a request handler needs, owned by the app.

    Lifecycle: ``manifest`` is known once start-up resolved the artifact;
    ``engine`` and ``batcher`` once it is loaded and warmed up (then ``ready``); ``load_error``
    if loading failed; ``draining`` from SIGTERM on.
    """

    settings: Settings
    runtime: str
    engine_factory: Callable[[], Engine]
    metrics: Metrics = field(default_factory=Metrics)
    manifest: Manifest | None = None
    engine: Engine | None = None
    batcher: Batcher | None = None
    ready: bool = False
    draining: bool = False
    load_error: str | None = None
    decode_limiter: anyio.CapacityLimiter | None = None
    uploads: Gate | None = None
    stop_process: Callable[[], None] | None = None  # set when running under a real server

    def require_ready(self) -> None:
        """Raise NotReady (503) unless loaded, warmed up and not draining, saying which."""
        if self.draining:
            raise NotReady("draining: the server is shutting down")
        if self.load_error is not None:
            raise NotReady(f"model failed to load: {self.load_error}")
        if not self.ready:
            raise NotReady("model is loading")

    @property
    def model_sha256(self) -> str:
        """The sha256 of the artifact file being served."""
        assert self.manifest is not None
        return self.manifest.artifact(self.runtime).sha256


def service_state(request: Request) -> ServiceState:
    """The ServiceState of the app serving ``request``."""
    state: ServiceState = request.app.state.service
    return state
