"""Cold start and the shared server helper: a server that cannot start says why."""

from __future__ import annotations

import pytest

from service.bench import coldstart
from service.bench.server import ServerFailed, spawn_server
from service.timing import summarize


def test_a_failed_start_raises_with_the_servers_own_reason(tmp_path):
    env = {"MODEL_DIR": str(tmp_path / "empty"), "MODEL_VARIANT": "pruned"}
    with pytest.raises(
        ServerFailed, match=r"exited with 2 before open port(.|\n)*nothing is built"
    ):
        coldstart.measure_once(env, coldstart.sample_png(), tmp_path / "server.log", timeout=60)


def test_a_chatty_server_cannot_block_on_its_output(tmp_path):
    # 100 kB on stderr would fill an unread pipe (64 KiB) and hang the child; a log cannot.
    env = {"MODEL_DIR": str(tmp_path), "MODEL_VARIANT": "x" * 100_000}
    with (
        pytest.raises(ServerFailed, match="exited with 2"),
        spawn_server(env, tmp_path / "server.log", timeout=60),
    ):
        pass
    assert (tmp_path / "server.log").stat().st_size > 100_000


def test_summaries():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert (s["p50"], s["median"], s["min"], s["max"], s["n"]) == (2.5, 2.5, 1.0, 4.0, 4)
    assert coldstart.spread([1.0, 3.0]) == pytest.approx(
        {"median": 2.0, "min": 1.0, "max": 3.0, "stdev": 2**0.5}
    )
    with pytest.raises(ValueError, match="no samples"):
        summarize([])
