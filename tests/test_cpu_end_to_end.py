"""The whole calibrate → predict path on real hardware: this machine's CPU.

1. `llmsim calibrate --device cpu --quick` measures this CPU (its GEMMs at the shapes
   of a small decoder, attention, element-wise ops) and fits a profile.
2. A real small decoder (PyTorch, random weights, the same architecture) runs prefill
   and decode on the CPU, timed.
3. llmsim simulates the same model and batch on the calibrated CPU device, through the
   ordinary scenario → engine path; the simulated TTFT and TPOT must match the measured
   prefill and decode-step latencies.

The procedure is bench/cpu_fidelity.py's (its docstring gives the reasons), built to
hold on a busy machine: calibration rounds interleaved with decoder timings (measure,
calibrate, predict, re-measure, ...), so a burst of load hits both sides; minima rather
than medians on both sides (the decoder: the least CPU time of its one thread over all
samples; the calibration: each point's least p10 over the rounds, curves refitted);
rounds go on (3 to 6) until one more moves nothing by 2%.

The tolerance is a factor of BAND = 1.5 either way on those minima, not the 25% the
check once asserted on medians, which failed 2 runs in 5 on a loaded 2-core machine.
Minima remove most of the load but not all of it: a calibration point is timed over
about a millisecond and a forward pass over 15-80 ms, and the prediction sums the
minima of many short samples while the measurement is the minimum of long ones, so
under load the prediction drifts low for the decode step (bandwidth-bound small GEMMs)
and high for prefill (whose long GEMM samples get preempted). On this 2-core VM, under
other processes' test runs (load average 3-5) and with one core kept busy,
predicted/measured fell within 0.74-1.29 (decode typically 0.8-0.9 even when quiet:
the simulator's own error here, within the strict 25%). BAND keeps a margin beyond
that and still fails on a fault of the size that matters: the decode step priced
without its LM head (a third of it: about 0.6), every layer counted twice (about 2),
the decode step's weights priced at twice their bytes (nearly 2), decode priced as a
prefill of the whole context (far more).
bench/cpu_fidelity.py prints the strict figure (25%), with the wall-clock minima and
medians beside it.

It measures time, so the Makefile runs it alone (`pytest -m timing`) after the parallel
suite: two tests timing the same two cores would disturb each other.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the calibrate extra (PyTorch) is not installed")

from bench import cpu_fidelity  # noqa: E402
from sim.spec import catalog  # noqa: E402

BAND = 1.5


@pytest.mark.timing
def test_simulated_latency_matches_a_real_decoder_on_this_cpu(tmp_path):
    lines: list[str] = []
    result = cpu_fidelity.run(tmp_path, say=lines.append)
    report = "\n".join([*lines, *cpu_fidelity.report(result)])
    print(report)  # shown with `pytest -rP`, and on failure

    # The prediction came from this run's calibration, through the catalog.
    with cpu_fidelity.catalog_root(tmp_path / "catalog"):
        assert catalog.load_device(result.device).calibration == cpu_fidelity.PROFILE
    assert cpu_fidelity.MIN_ROUNDS <= len(result.rounds) <= cpu_fidelity.MAX_ROUNDS

    (ttft, tpot), (prefill, decode) = result.predicted, result.measured("cpu")
    assert 1 / BAND <= ttft / prefill <= BAND, report
    assert 1 / BAND <= tpot / decode <= BAND, report
