"""Application factory and model lifecycle: resolve -> load -> warm up -> ready -> drain.

``uvicorn service.app:app`` and ``densenet serve`` both end up here. Nothing heavy happens at
import time: the artifact is resolved when the app starts (a bad MODEL_VARIANT stops start-up
with one line), and the engine loads in the background so ``/healthz`` answers at once and
``/readyz`` turns 200 only after the warm-up inference.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType

import anyio
import numpy as np
import psutil
from fastapi import FastAPI

from service import __version__, oip, routes
from service import manifest as manifests
from service.batching import Batcher, Gate
from service.build_info import build_info
from service.config import Settings
from service.engines import Engine, get_engine_class
from service.errors import ConfigurationError
from service.manifest import Manifest
from service.middleware import install_error_handlers, install_middleware
from service.state import ServiceState

log = logging.getLogger("service")


def seconds_since_exec() -> float:
    """Time since this process was exec'd, both ends read from the kernel's boot clock.

    (``psutil.Process().create_time()`` mixes in the wall clock and boot time, which drift
    apart inside some container sandboxes.)
    """
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return time.time() - psutil.Process().create_time()


def resolve_artifact(settings: Settings) -> tuple[Manifest, Path]:
    """Find the artifact the settings select (cheap; reads one JSON file)."""
    return manifests.resolve(
        settings.model_dir, settings.model_variant, settings.model_runtime, settings.model_sha256
    )


def engine_from_settings(settings: Settings) -> Engine:
    """The engine the settings select, resolved but not loaded (cheap)."""
    manifest, path = resolve_artifact(settings)
    engine_cls = get_engine_class(settings.model_runtime)
    return engine_cls(
        manifest,
        path,
        threads=settings.threads,
        device=settings.device,
        cuda=settings.cuda,
        workers=settings.engine_workers,
        precision=settings.openvino_precision,
    )


def check_engine_fits(engine: Engine, settings: Settings) -> None:
    """Refuse an engine that can't take what the service will send it (TensorRT's are fixed)."""
    size = engine.manifest.preprocess.crop_size
    if engine.input_shape(1) != (1, 3, size, size):
        _, _, height, width = engine.input_shape(1)
        raise ConfigurationError(
            f"{engine.path} takes {height}x{width} inputs, but this variant's preprocessing "
            f"makes {size}x{size}; rebuild it for {size}x{size}"
        )
    if engine.batch_max is not None and settings.max_batch_size > engine.batch_max:
        raise ConfigurationError(
            f"MAX_BATCH_SIZE={settings.max_batch_size} exceeds the largest batch "
            f"{engine.path} accepts ({engine.batch_max}); lower it or rebuild the artifact"
        )


def check_outputs(engine: Engine, logits: np.ndarray) -> None:
    """Refuse a model whose outputs do not match its manifest's labels (a 2-label manifest on
    a 10-class model would otherwise turn ready and answer 500 to every request)."""
    labels = len(engine.manifest.labels)
    if logits.shape != (1, labels):
        raise ConfigurationError(
            f"{engine.path} outputs shape {tuple(logits.shape)} for one image; its manifest "
            f"has {labels} labels, so (1, {labels}) was expected"
        )


async def load_model(state: ServiceState, engine: Engine) -> None:
    """Load and warm up the engine, start the batcher, then report ready."""
    settings = state.settings
    started = time.perf_counter()
    await anyio.to_thread.run_sync(engine.load)
    check_engine_fits(engine, settings)
    logits = await anyio.to_thread.run_sync(
        functools.partial(engine.warmup, batch_size=settings.max_batch_size)
    )
    check_outputs(engine, logits)
    state.metrics.model_load_seconds.set(time.perf_counter() - started)
    state.engine = engine
    state.batcher = Batcher(
        engine.predict,
        max_batch_size=settings.max_batch_size,
        timeout_s=settings.batch_timeout_ms / 1000.0,
        max_in_flight=settings.max_queue_size,
        metrics=state.metrics,
        workers=settings.engine_workers,
        direct=settings.threads == 1,
    )
    await state.batcher.start()
    state.ready = True
    since_exec = seconds_since_exec()
    state.metrics.time_to_ready_seconds.set(since_exec)
    log.info(
        "ready: variant=%s runtime=%s on %s workers=%d x threads=%d jpeg=%s path=%s "
        "in %.2fs since exec",
        engine.manifest.variant,
        state.runtime,
        engine.describe(),
        settings.engine_workers,
        settings.threads,
        settings.jpeg_decode,
        "one-hop" if state.batcher.direct else "decode-pool+batcher",
        since_exec,
    )


def _install_drain_on_sigterm(state: ServiceState) -> None:
    """On SIGTERM: report not-ready for DRAIN_SECONDS, then let uvicorn shut down gracefully.

    Uvicorn installs its own handler with ``signal.signal`` before the lifespan starts; we wrap
    it so load balancers see ``/readyz`` turn 503 while in-flight requests finish.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return
    loop = asyncio.get_running_loop()
    if state.stop_process is None:  # `densenet serve` sets its own, which exits non-zero
        state.stop_process = lambda: os.kill(os.getpid(), signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if state.draining:  # a second SIGTERM: stop draining now
            previous(signum, frame)
            return
        state.draining = True
        log.info("SIGTERM: readiness off, draining for %.1fs", state.settings.drain_seconds)
        loop.call_soon_threadsafe(
            loop.call_later, state.settings.drain_seconds, previous, signum, None
        )

    signal.signal(signal.SIGTERM, on_sigterm)


def _exit_on_load_failure(task: asyncio.Task[None], state: ServiceState) -> None:
    if task.cancelled() or task.exception() is None:
        return
    exc = task.exception()
    if isinstance(exc, ConfigurationError):
        state.load_error = str(exc)
        log.error("model load failed: %s", exc)
    else:
        state.load_error = f"{type(exc).__name__}: {exc}"
        log.error("model load failed", exc_info=exc)
    # Not ready forever is worse than a restart: end the process so the platform restarts it
    # (under a real server; in-process test clients keep answering /readyz with the reason).
    if state.stop_process is not None:
        state.stop_process()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Resolve the artifact, load it in the background, drain on shutdown."""
    state: ServiceState = app.state.service
    engine = state.engine_factory()
    state.manifest = engine.manifest
    state.decode_limiter = anyio.CapacityLimiter(max(2, state.settings.threads))
    state.uploads = Gate(state.settings.uploads, "uploads being received")
    m = state.manifest
    state.metrics.build_info.labels(**build_info(state.runtime)).set(1)
    state.metrics.model_info.labels(
        variant=m.variant,
        runtime=state.runtime,
        sha256=state.model_sha256,
        task=m.task,
    ).set(1)
    state.metrics.model_ready.set_function(lambda: float(state.ready and not state.draining))
    loader = asyncio.create_task(load_model(state, engine), name="load-model")
    loader.add_done_callback(lambda task: _exit_on_load_failure(task, state))
    _install_drain_on_sigterm(state)
    try:
        yield
    finally:
        state.ready = False
        state.draining = True
        if not loader.done():
            loader.cancel()
        if state.batcher is not None:
            await state.batcher.stop()


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the FastAPI app.

    Args:
        settings: read from the environment unless given.
        engine: the engine to serve, constructed but not loaded; by default the one the
            settings select, resolved at start-up. ``densenet serve`` resolves it first (to
            refuse a bad artifact with one line); tests pass a fake one. Either way it goes
            through the same load -> warm-up -> ready lifecycle.
    """
    settings = settings or Settings()

    def engine_factory() -> Engine:
        return engine if engine is not None else engine_from_settings(settings)

    state = ServiceState(
        settings=settings,
        runtime=engine.runtime if engine is not None else settings.model_runtime,
        engine_factory=engine_factory,
    )
    # A no-op when logging is configured already (as `densenet serve` does); under a bare
    # `uvicorn service.app:app` it gives the service's own log lines a handler.
    logging.basicConfig(
        level=state.settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("service").setLevel(state.settings.log_level.upper())
    app = FastAPI(
        title="DenseNet-121 inference",
        summary="Image classification with baseline, quantized, pruned, distilled and "
        "TensorRT DenseNet-121 variants.",
        version=__version__,
        lifespan=lifespan,
        # /predict/ is a 404 in the error shape, not a 307 whose Location echoes the Host
        # header back.
        redirect_slashes=False,
    )
    app.state.service = state
    routes.add_routes(app.router)
    oip.add_routes(app.router, settings.model_name, settings.max_images_per_request)
    install_middleware(app, state.settings, state.metrics, lambda: state.draining)
    install_error_handlers(app)
    return app


def __getattr__(name: str) -> FastAPI:
    # ``uvicorn service.app:app``: build the app on first access, not at import.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
