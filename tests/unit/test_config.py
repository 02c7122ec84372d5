"""Settings from the environment, and the CPUs a container is given."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from service.config import Settings, available_cpus
from service.engines import list_runtimes
from service.variants import list_variants

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", AFFINITY),
        ("100000 100000\n", 1),
        ("50000 100000\n", 1),  # half a CPU still needs one thread
        ("150000 100000\n", min(2, AFFINITY)),  # 1.5 CPUs round up
        ("6400000 100000\n", AFFINITY),  # a quota above the affinity mask does not add CPUs
        ("garbage\n", AFFINITY),
    ],
)
def test_cgroup_quota_caps_the_affinity_mask(tmp_path, cpu_max, expected):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert available_cpus(path) == expected


def test_no_cgroup_file_means_the_affinity_mask(tmp_path):
    assert available_cpus(tmp_path / "missing") == AFFINITY


def test_environment_names_are_the_settings_fields(monkeypatch):
    monkeypatch.setenv("MODEL_VARIANT", "pruned")
    monkeypatch.setenv("MODEL_RUNTIME", "onnxruntime")
    monkeypatch.setenv("NUM_THREADS", "3")
    settings = Settings()
    assert (settings.model_variant, settings.model_runtime, settings.threads) == (
        "pruned",
        "onnxruntime",
        3,
    )


def test_unknown_names_list_the_variant_table_and_the_engine_registry():
    with pytest.raises(ValidationError) as variant:
        Settings(model_variant="tiny-yolo")
    assert f"known: {', '.join(list_variants())}" in str(variant.value)
    with pytest.raises(ValidationError) as runtime:
        Settings(model_runtime="tvm")
    assert f"known: {', '.join(list_runtimes())}" in str(runtime.value)


def test_every_field_is_described():
    assert all(field.description for field in Settings.model_fields.values())


def test_the_configuration_page_and_env_example_are_generated_from_settings():
    from service import config_docs

    page = config_docs.CONFIG_PAGE.read_text()
    assert page == config_docs.with_table(page), "run: make docs (python -m service.config_docs)"
    assert config_docs.ENV_EXAMPLE.read_text() == config_docs.env_example(), "run: make docs"
    for name in Settings.model_fields:
        assert f"| `{name.upper()}` |" in page, name


def test_a_setting_missing_from_the_page_is_caught(monkeypatch):
    from service import config_docs

    page = config_docs.CONFIG_PAGE.read_text()
    fields = dict(Settings.model_fields)
    fields.pop("drain_seconds")
    monkeypatch.setattr(Settings, "model_fields", fields)
    assert "DRAIN_SECONDS" not in config_docs.markdown_table()
    assert config_docs.with_table(page) != page  # the committed page would now be stale
