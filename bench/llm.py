"""Causal-LM distillation on an arithmetic task generated offline: exact match of students with at most a
quarter of the teacher's parameters, trained on the reference answers alone or distilled token by token
(forward KL, reverse KL, JSD) from the teacher's full logits or from its top-k cache.

Every run goes through :class:`worker.lm_pipeline.LMPipeline`, the code a ``causal_lm`` job runs (a local
folder as object store, this process's CPU), so the figures are the job's. The task: ``a+b=`` with ``a`` and
``b`` below ``--max-operand``, completion the sum; the train and test prompts are disjoint. The teacher (a
GPT-2 over a character tokenizer, ``tests/lm_support.py``) is fine-tuned on the train records; each student
is a smaller GPT-2 of the same tokenizer, the same seed for every method.

    .venv/bin/python -m bench.llm                      # the small default (a few minutes on 2 cores)
    .venv/bin/python -m bench.llm --seeds 3 --teacher-epochs 30 --student-epochs 10

Prints a markdown table: exact match (mean and spread over seeds), token accuracy, parameters, tokens per
second (forward passes over held-out records), and the cache's bytes per token against full fp16 logits.
Exit status 0 when the best distilled student reaches 90% of the teacher's exact match and beats the
reference-answers student, else 1.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lm_support import char_tokenizer, tiny_causal_lm

from distill.datasets import LMDataset
from distill.spec import JobSpec
from distill.storage import LocalStore
from worker.engine.lm import describe
from worker.engine.loop import NoCallbacks
from worker.lm_inputs import LoadedLM, LoadedLMData
from worker.lm_pipeline import LMPipeline
from worker.pipeline import JobContext
from worker.teacher_cache import TeacherCache

CPU = torch.device("cpu")
METHODS: dict[str, dict[str, Any]] = {
    "reference answers only (SFT)": {},
    "forward KL, top-k cache": {"losses": [{"type": "forward_kl"}]},
    "reverse KL, top-k cache": {"losses": [{"type": "reverse_kl"}]},
    "JSD (beta 0.5), top-k cache": {"losses": [{"type": "jsd", "beta": 0.5}]},
    "forward KL, full logits": {"losses": [{"type": "forward_kl"}], "full_logits": True},
    "reverse KL, full logits": {"losses": [{"type": "reverse_kl"}], "full_logits": True},
    "JSD (beta 0.5), full logits": {"losses": [{"type": "jsd", "beta": 0.5}], "full_logits": True},
}


def arithmetic(max_operand: int, train: int, test: int, seed: int) -> tuple[list[dict[str, str]], ...]:
    pairs = [(a, b) for a in range(max_operand) for b in range(max_operand)]
    random.Random(seed).shuffle(pairs)
    if train + test > len(pairs):
        raise SystemExit(f"only {len(pairs)} distinct prompts below {max_operand}; ask for fewer records")
    records = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a, b in pairs[: train + test]]
    return records[:train], records[train:]


def context(spec: dict[str, Any], root: Path, job_id: str) -> JobContext:
    return JobContext(
        job_id=job_id,
        spec=JobSpec.model_validate(spec),
        cache=TeacherCache(LocalStore(root), "bench"),
        device=CPU,
        progress=NoCallbacks(),
        quiet=NoCallbacks(),
        event=lambda _message, _data: None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-operand", type=int, default=50)
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--teacher-layers", type=int, default=3)
    parser.add_argument("--teacher-hidden", type=int, default=128)
    parser.add_argument("--student-layers", type=int, default=1)
    parser.add_argument("--student-hidden", type=int, default=64)
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--student-epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--top-k", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = char_tokenizer()
    train, test = arithmetic(args.max_operand, args.train, args.test, seed=0)
    data = LoadedLMData(train=LMDataset(train), validation=LMDataset(test))
    max_length = 16
    root = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    began = time.monotonic()
    start = tiny_causal_lm(tok, layers=args.teacher_layers, hidden=args.teacher_hidden, heads=4, context=64)
    teacher_spec = {
        "task": "causal_lm",
        "data": {"train": {"file": "bench"}},
        "model": {"arch": "pretrained", "file": "start", "max_length": max_length},
        "training": {"epochs": args.teacher_epochs, "batch_size": 32, "learning_rate": 2e-3},
    }
    start_lm = LoadedLM(start, tok, "start", "start", "model.file", describe(start, "char"))
    made = LMPipeline(context(teacher_spec, root, "teacher"), data=data, teacher=None, student_start=start_lm)
    teacher_out = made.run(time.monotonic())
    teacher_model = start  # trained in place
    teacher = LoadedLM(
        teacher_model, tok, "teacher-sha", "teacher", "teacher.job", describe(teacher_model, "char")
    )
    t_em = teacher_out.result["exact_match"]
    print(
        f"teacher: {teacher.info.parameters:,} parameters, exact match {t_em:.3f} "
        f"({time.monotonic() - began:.0f} s)",
        flush=True,
    )
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in METHODS}
    cache_bytes: int | None = None
    for seed in range(args.seeds):
        for name, distillation in METHODS.items():
            student_model = {
                "arch": "gpt2",
                "n_layer": args.student_layers,
                "n_embd": args.student_hidden,
                "n_head": 4,
                "max_length": max_length,
            }
            spec: dict[str, Any] = {
                "task": "causal_lm",
                "data": {"train": {"file": "bench"}},
                "model": student_model,
                "teacher": {"job": "teacher"},
                "training": {
                    "epochs": args.student_epochs,
                    "batch_size": 32,
                    "learning_rate": 3e-3,
                    "seed": seed,
                },
            }
            use_teacher: LoadedLM | None = teacher
            start_student = None
            if distillation:
                spec["distillation"] = {"temperature": 1.0, **distillation}
                if "full_logits" not in distillation:
                    spec["distillation"]["top_k"] = args.top_k
            else:  # the same student architecture, drawn the same way, trained on the answers alone
                from distill.spec import GPT2StudentConfig
                from worker.engine.lm import build_student

                fresh = build_student(
                    GPT2StudentConfig.model_validate(student_model), teacher_model, tok, seed=seed
                )
                start_student = LoadedLM(fresh, tok, "fresh", "fresh", "model.file", describe(fresh, "char"))
                spec["model"] = {"arch": "pretrained", "file": "fresh", "max_length": max_length}
                spec.pop("teacher")
                use_teacher = None
            t0 = time.monotonic()
            out = LMPipeline(
                context(spec, root, f"{name}-{seed}"),
                data=data,
                teacher=use_teacher,
                student_start=start_student,
            ).run(time.monotonic())
            result = out.result
            if "teacher_cache_bytes_per_token" in result:
                cache_bytes = result["teacher_cache_bytes_per_token"]
            rows[name].append({**result, "seconds": time.monotonic() - t0})
            print(
                f"  seed {seed} {name}: exact match {result['exact_match']:.3f} "
                f"({time.monotonic() - t0:.0f} s)",
                flush=True,
            )
    vocab = int(teacher_model.config.vocab_size)
    print()
    print(
        f"Arithmetic `a+b=` (operands below {args.max_operand}; {args.train} train / {args.test} held-out "
        f"prompts, disjoint), {args.seeds} seed(s). Teacher: GPT-2 "
        f"{args.teacher_layers}x{args.teacher_hidden}, "
        f"{teacher.info.parameters:,} parameters, exact match **{t_em:.3f}**, "
        f"{teacher_out.result['tokens_per_second']:,.0f} tokens/s."
    )
    print()
    print(
        f"| student (GPT-2 {args.student_layers}x{args.student_hidden}) | exact match | token accuracy "
        "| parameters | tokens/s |"
    )
    print("|---|---|---|---|---|")
    means: dict[str, float] = {}
    for name, runs in rows.items():
        ems = [r["exact_match"] for r in runs]
        means[name] = statistics.fmean(ems)
        spread = f" ± {statistics.stdev(ems):.3f}" if len(ems) > 1 else ""
        acc = statistics.fmean(r["token_accuracy"] for r in runs)
        print(
            f"| {name} | {means[name]:.3f}{spread} | {acc:.3f} | {runs[0]['parameters']:,} "
            f"({runs[0]['parameters'] / teacher.info.parameters:.1%}) | {runs[0]['tokens_per_second']:,.0f} |"
        )
    print()
    print(
        f"Top-k cache (k = {args.top_k}): {cache_bytes} bytes per completion token, against {2 * vocab} for "
        f"the full logits in fp16 (vocabulary {vocab}; {2 * 32000:,} for a 32k vocabulary)."
    )
    best = max((v, k) for k, v in means.items() if k != "reference answers only (SFT)")
    sft = means["reference answers only (SFT)"]
    ok = best[0] >= 0.9 * t_em and best[0] > sft
    print(
        f"best distilled: {best[1]} {best[0]:.3f} vs teacher {t_em:.3f} and SFT {sft:.3f}: "
        f"{'target met' if ok else 'target missed'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
