"""The two ways the simulation runs (each request an event; arrivals aggregated per second)
agree, and an hour at 10,000 requests/s fits in a minute."""

from __future__ import annotations

import pytest

from service.plan import traces
from service.plan.knative import Autoscaling
from service.plan.simulate import EXACT_MAX_REQUESTS, Pod, Simulation
from tests.plan.pods import COLD, cpu_bound

RAMP = "start_s,end_s,rps\n0,60,50\n60,120,150\n120,180,300\n180,240,100\n"


STEADY = "start_s,end_s,rps\n0,300,150\n"
STEP = "start_s,end_s,rps\n0,100,100\n100,300,250\n"


@pytest.mark.parametrize(("text", "cc"), [(STEADY, 1), (STEADY, 2), (STEP, 1), (RAMP, 1)])
def test_exact_and_fluid_agree_on_latency(text, cc):
    trace = traces.parse(text, "t")
    spec = Autoscaling(container_concurrency=cc, target=float(cc))
    pod = Pod(cpu_bound(), COLD)
    exact, fluid = (Simulation(pod, spec, trace, mode=m, seed=1).run() for m in ("exact", "fluid"))
    assert exact.mode == "exact" and fluid.mode == "fluid"
    for q in ("p50", "p95"):
        assert fluid.latency_ms[q] == pytest.approx(exact.latency_ms[q], rel=0.25), q
    assert fluid.requests == pytest.approx(exact.requests, rel=0.03)
    if text == STEADY:
        # Pods too, where no step can tip a pod into panic (a step does, by chance, in both).
        assert fluid.pod_seconds == pytest.approx(exact.pod_seconds, rel=0.25)


def test_an_hour_at_ten_thousand_requests_per_second_simulates_within_a_minute():
    trace = traces.constant(10_000, 3600)
    assert trace.expected_requests > EXACT_MAX_REQUESTS  # so it runs aggregated
    result = Simulation(Pod(cpu_bound(), COLD), Autoscaling(container_concurrency=4), trace).run()
    assert result.mode == "fluid"
    assert result.requests == pytest.approx(36_000_000, rel=0.001)
    assert result.wall_s < 60
    assert result.peak_pods >= 10_000 / cpu_bound().throughput(4)
