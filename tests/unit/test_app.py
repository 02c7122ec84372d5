"""The app's lifecycle: load -> check -> warm up -> ready, and refusing an engine that can't fit."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from service.app import check_engine_fits, create_app
from service.config import Settings
from service.errors import ConfigurationError
from tests.support import FakeEngine


def test_load_then_warm_up_then_ready():
    engine = FakeEngine()
    with TestClient(create_app(Settings(), engine=engine)) as client:
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert engine.loaded
        assert engine.calls[:2] == [1, 1]  # two warm-up batches before the first request


def test_service_refuses_an_engine_that_cannot_take_its_inputs():
    native = FakeEngine().manifest.preprocess.crop_size
    check_engine_fits(FakeEngine(size=native, batch_max=32), Settings(max_batch_size=32))
    with pytest.raises(ConfigurationError, match=f"takes 224x224 inputs.*makes {native}x{native}"):
        check_engine_fits(FakeEngine(size=224, batch_max=32), Settings())
    with pytest.raises(ConfigurationError, match=r"MAX_BATCH_SIZE=32 exceeds .* accepts \(16\)"):
        check_engine_fits(FakeEngine(size=native, batch_max=16), Settings(max_batch_size=32))


def test_an_engine_that_cannot_fit_never_becomes_ready():
    engine = FakeEngine(size=224)
    with TestClient(create_app(Settings(), engine=engine)) as client:
        deadline = time.monotonic() + 10
        while "loading" in (message := client.get("/readyz").json()["error"]["message"]):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert message.startswith("model failed to load: ") and "rebuild it for 8x8" in message
    assert engine.calls == []  # refused before the warm-up ran it


class TwoClassEngine(FakeEngine):
    """A model with fewer outputs than its manifest has labels."""

    def predict(self, batch):
        return super().predict(batch)[:, :2]


def test_a_model_whose_outputs_do_not_match_its_labels_never_becomes_ready():
    with TestClient(create_app(Settings(), engine=TwoClassEngine())) as client:
        deadline = time.monotonic() + 10
        while "loading" in (message := client.get("/readyz").json()["error"]["message"]):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert "outputs shape (1, 2) for one image; its manifest has 10 labels" in message
