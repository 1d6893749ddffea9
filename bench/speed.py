"""Speed benchmark: how fast llmsim simulates, and against Vidur on the same machine.

Each case runs in its own process, so its wall time includes start-up and its peak
memory (max RSS) is its own. Printed per case: simulated requests, wall seconds (the
simulation alone and the whole process), events processed, events per second,
requests per wall-second, and max RSS.

With `--vidur DIR` (a checkout of github.com/microsoft/vidur with its environment's
python given by `--vidur-python`), the same workload runs through Vidur in the same
session and the ratio of wall times is printed: measured side by side, not quoted.

    python bench/speed.py                 # the Qwen2-7B / A30 cases and the 1M run
    python bench/speed.py --skip-1m
    VIDUR_CACHE_DIR=/path/to/warm/cache python bench/speed.py --vidur /tmp/vidur-bench/vidur \
        --vidur-python /tmp/vidur-bench/venv/bin/python

Vidur trains random-forest predictors on first use (half an hour here) and caches them;
point VIDUR_CACHE_DIR at a warm cache so the comparison is of simulation, not training.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scenarios" / "bench-qwen2-7b-a30-conv.yaml"
ONE_MILLION = ROOT / "bench" / "scenarios" / "bench-1m-64-replicas.yaml"

CHILD = """
import json, sys, time
t0 = time.perf_counter()
from sim.results.run import simulate
from sim.plan import load_scenario
s = load_scenario(sys.argv[1], sys.argv[2:])
res = simulate(s)
print(json.dumps({"sim_wall_s": res.wall_s, "events": res.events,
                  "requests": res.summary.requests, "finished": res.summary.finished,
                  "tpot_p50_s": res.summary.tpot_s.p50,
                  "ttft_p50_s": res.summary.ttft_s.p50,
                  "since_start_s": time.perf_counter() - t0}))
"""


def measure(argv: list[str], cwd: Path = ROOT, env: dict | None = None) -> tuple[float, int, str]:
    """(wall seconds, max RSS in KB, stdout) of one child process, from its own rusage."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:4])} ... failed:\n{err.read()[-2000:]}")
        return wall, usage.ru_maxrss, out.read()


def run_llmsim(scenario: Path, overrides: list[str]) -> dict:
    wall, rss, out = measure([sys.executable, "-c", CHILD, str(scenario), *overrides])
    data = json.loads(out.strip().splitlines()[-1])
    data.update({"process_wall_s": wall, "max_rss_mb": rss / 1024})
    return data


def run_vidur(vidur: Path, python: str, requests: int, scheduler: str) -> dict:
    """Vidur's standard Qwen2-7B / A30 run (its A30 and Qwen-2-7B configs come from the
    block-sim fork that produced the shared A30 profiles), plots and Chrome trace off."""
    out = Path(os.environ.get("TMPDIR", "/tmp")) / "vidur-bench-out"
    argv = [
        python,
        "-m",
        "vidur.main",
        "--seed",
        "0",
        "--replica_config_device",
        "a30",
        "--replica_config_network_device",
        "a30_single_gpu",
        "--replica_config_model_name",
        "Qwen/Qwen-2-7B",
        "--cluster_config_num_replicas",
        "1",
        "--replica_config_tensor_parallel_size",
        "1",
        "--replica_config_num_pipeline_stages",
        "1",
        "--request_generator_config_type",
        "synthetic",
        "--synthetic_request_generator_config_num_requests",
        str(requests),
        "--synthetic_request_generator_config_seed",
        "0",
        "--length_generator_config_type",
        "trace",
        "--trace_request_length_generator_config_max_tokens",
        "4096",
        "--trace_request_length_generator_config_trace_file",
        "./data/processed_traces/splitwise_conv.csv",
        "--trace_request_length_generator_config_seed",
        "0",
        "--interval_generator_config_type",
        "poisson",
        "--poisson_request_interval_generator_config_qps",
        "3.0",
        "--poisson_request_interval_generator_config_seed",
        "0",
        "--replica_scheduler_config_type",
        scheduler,
        "--random_forrest_execution_time_predictor_config_prediction_max_prefill_chunk_size",
        "4096",
        "--random_forrest_execution_time_predictor_config_prediction_max_batch_size",
        "128",
        "--random_forrest_execution_time_predictor_config_prediction_max_tokens_per_request",
        "4096",
        "--metrics_config_output_dir",
        str(out),
        "--no-metrics_config_store_plots",
        "--no-metrics_config_enable_chrome_trace",
    ]
    if scheduler == "vllm":
        argv += ["--vllm_scheduler_config_batch_size_cap", "128"]
    else:
        argv += [
            "--sarathi_scheduler_config_batch_size_cap",
            "128",
            "--sarathi_scheduler_config_chunk_size",
            "512",
        ]
    if os.environ.get("VIDUR_CACHE_DIR"):
        argv += ["--metrics_config_cache_dir", os.environ["VIDUR_CACHE_DIR"]]
    env = dict(os.environ, WANDB_MODE="disabled")
    wall, rss, _ = measure(argv, cwd=vidur, env=env)
    return {"process_wall_s": wall, "max_rss_mb": rss / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-1m", action="store_true", help="skip the 1,000,000-request run")
    ap.add_argument("--vidur", type=Path, help="a Vidur checkout to run side by side")
    ap.add_argument("--vidur-python", default="python", help="python of Vidur's environment")
    args = ap.parse_args()

    cases = [
        ("qwen2-7b/a30 vllm, 5000", BENCH, ["workload.requests=5000"]),
        (
            "qwen2-7b/a30 sarathi, 5000",
            BENCH,
            [
                "workload.requests=5000",
                "scheduler={policy: sarathi, max_num_seqs: 128, "
                "chunk_size: 512, max_model_len: 8192}",
            ],
        ),
        ("qwen2-7b/a30 vllm, 19000", BENCH, ["workload.requests=19000"]),
        (
            "qwen2-7b/a30 sarathi, 19000",
            BENCH,
            [
                "workload.requests=19000",
                "scheduler={policy: sarathi, max_num_seqs: 128, "
                "chunk_size: 512, max_model_len: 8192}",
            ],
        ),
    ]
    if not args.skip_1m:
        cases.append(("1M requests, 64 replicas", ONE_MILLION, []))

    header = (
        f"{'case':<30}{'requests':>10}{'sim s':>9}{'process s':>11}{'events':>11}"
        f"{'events/s':>11}{'req/wall-s':>12}{'max RSS MB':>12}"
    )
    print(header)
    print("-" * len(header))
    results = {}
    for label, scenario, overrides in cases:
        r = run_llmsim(scenario, overrides)
        results[label] = r
        print(
            f"{label:<30}{r['requests']:>10,}{r['sim_wall_s']:>9.2f}{r['process_wall_s']:>11.2f}"
            f"{r['events']:>11,}{r['events'] / r['sim_wall_s']:>11,.0f}"
            f"{r['requests'] / r['process_wall_s']:>12,.0f}{r['max_rss_mb']:>12,.0f}",
            flush=True,
        )

    if args.vidur:
        print("\nVidur on the same machine, same workload (whole process, warm predictor cache):")
        for requests in (5000, 19000):
            for sched in ("vllm", "sarathi"):
                v = run_vidur(args.vidur, args.vidur_python, requests, sched)
                ours = results[f"qwen2-7b/a30 {sched}, {requests}"]["process_wall_s"]
                print(
                    f"  {sched:<8}{requests:>7,} requests: Vidur {v['process_wall_s']:7.1f} s "
                    f"({v['max_rss_mb']:,.0f} MB), llmsim {ours:5.2f} s: "
                    f"{v['process_wall_s'] / ours:5.1f}x faster",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
