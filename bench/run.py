"""Run every benchmark, one process each (so one's threads and caches do not touch the next's), and say
which met its target. ``make bench`` runs this; ``ARGS='--only speed text'`` picks some.

    .venv/bin/python -m bench.run [--only speed demo quality text poll pickup]

Each benchmark prints its own table (the README's figures come from these runs) and exits 1 when it
misses its target; this runner ends with a line per benchmark and exits 1 when any missed or failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS: dict[str, tuple[str, list[str], str]] = {
    "speed": ("bench.speed", [], "cached and live distillation epochs vs label-only epochs (<= 1.10x)"),
    "demo": ("bench.demo_quality", ["--seeds", "5"], "the demo's distilled student vs scratch, 5 seeds"),
    "quality": ("bench.quality", ["--markdown"], "every method vs scratch, 5 seeds (about 8 minutes)"),
    "text": ("bench.text_embedding", [], "MiniLM-L6 embedding student: cosine >= 0.9, >= 3x faster"),
    "poll": ("bench.status_poll", [], "authenticated status poll >= 0.9 of a bare primary-key select"),
    "pickup": ("bench.worker_pickup", [], "a worker's first pick-up within 50 ms of the next"),
    "ddp": ("bench.data_parallel", [], "1 vs 2 gloo ranks throughput"),
    "llm": ("bench.llm", [], "causal-LM students: best distilled >= 90% of the teacher's exact match, > SFT"),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=list(BENCHMARKS))
    args = parser.parse_args()
    outcomes: list[tuple[str, int, float]] = []
    for name in args.only:
        module, extra, what = BENCHMARKS[name]
        print(f"\n==== {name}: {what}\n     {sys.executable} -m {module} {' '.join(extra)}", flush=True)
        started = time.monotonic()
        rc = subprocess.call([sys.executable, "-m", module, *extra])
        outcomes.append((name, rc, time.monotonic() - started))
    print("\n==== summary")
    for name, rc, took in outcomes:
        verdict = "target met" if rc == 0 else f"target missed or failed (exit {rc})"
        print(f"  {name:8} {verdict:40} {took:7.0f} s")
    sys.exit(0 if all(rc == 0 for _, rc, _ in outcomes) else 1)


if __name__ == "__main__":
    main()
