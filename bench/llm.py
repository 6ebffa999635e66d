"""Causal-LM distillation on multi-digit addition, generated offline: answer exact match of students with at
most a quarter of the teacher's parameters, trained on the reference answers alone, distilled token by token
(forward KL, reverse KL, JSD) from the teacher's full logits or its top-k cache, or fine-tuned on the served
teacher's answers (black-box) with and without its working.

The setting is the one reasoning models are distilled in (DeepSeek-R1 into Qwen and Llama, Sky-T1): the
user's data set holds prompts and their reference answers, the sum alone (``Q: 047+285`` -> ``332``), as
most labelled data does; the teacher shows its working before it answers,
``<think>\n7+5=12;4+8+1=13;0+2+1=3\n</think>\n332`` (the column sums from the right with their carries).
Operands are ``--digits`` zero-padded numbers drawn at random; training and held-out prompts are disjoint.
Records are chat ``messages``, so a job's training text and what ``distill serve-model`` feeds the model are
the same chat-template rendering. Exact match is the final answer's (the text after ``</think>``) against
the true sum, so students trained without the working are scored like the others.

Every training run is :class:`worker.lm_pipeline.LMPipeline`, the code a ``causal_lm`` job runs (a local
folder as object store, this process's CPU). The teacher (a GPT-2 over the character tokenizer of
``tests/lm_support.py``) stands in for a large reasoning model: it is trained once on worked solutions to
the training prompts and kept in ``--teacher-dir`` (reused by every seed, method and later run with the
same settings). Each student is a smaller GPT-2 of the same tokenizer drawn the same way for every method
of a seed. The methods:

- *reference answers only (SFT)*: the user's records as they are, no working (what a hand-written
  fine-tuning script does with the data set);
- *black-box*: ``worker.endpoint_teacher.collect`` asks the served teacher for the training prompts and the
  student fine-tunes on ``training_records``, with or without the ``<think>`` working, as a black-box job
  does (``teacher.endpoint``, ``train_on_reasoning``);
- *white-box*: token-level forward KL, reverse KL or JSD against the teacher's distributions (its top-k
  cache or full logits) over the teacher's answers with working, the ``teacher_answers.jsonl`` a black-box
  job leaves, uploaded again as the data of a white-box job;
- and, for comparison only (not a distillation method): the reference answers with worked solutions, what
  the teacher learned from, which the user's data set does not have.

Black-box collection: the teacher is saved as a Hugging Face folder, loaded by
``distill.serving.load_model_dir`` and served by ``distill.serving.build_app`` on loopback; the first
``--served`` training prompts are asked of it (greedy). The server generates one request at a time (a few
prompts a second here), so the remaining training prompts are answered by the same model in-process with
batched greedy decoding (``worker.engine.lm.generate``) on the same chat-template prompt; the bench checks
that both give the same answer on every served prompt and prints the agreement.

    .venv/bin/python -m bench.llm --parallel 3 --threads 1          # the README's run (3 seeds, 16 epochs)
    .venv/bin/python -m bench.llm --seeds 1 --student-epochs 4      # a quick look

On 2 busy cores the teacher's 20 epochs took 16 minutes (once: later runs with the same settings reuse
it) and a student about 10 seconds an epoch (20 with a live teacher's full logits).

Prints a markdown table: answer exact match (mean ± standard deviation over seeds), parameters, tokens per
second (teacher and student forward passes over held-out records) and the cache's bytes per token against
full fp16 logits. Exit status 0 when the best distilled student reaches 90% of the teacher's exact match and
beats the reference-answers student, else 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lm_support import char_tokenizer, save_pretrained, tiny_causal_lm

from distill.datasets import LMDataset
from distill.spec import EndpointSettings, GPT2StudentConfig, JobSpec
from distill.storage import LocalStore
from worker.engine.lm import build_student, decode, describe, generate, token_metrics
from worker.engine.lm_data import encode
from worker.engine.loop import NoCallbacks
from worker.lm_inputs import LoadedLM, LoadedLMData
from worker.lm_pipeline import LMPipeline
from worker.pipeline import JobContext
from worker.teacher_cache import TeacherCache

CPU = torch.device("cpu")
SFT = "reference answers only (SFT)"
WORKED = "for comparison: reference answers with worked solutions"
WHITE_BOX: dict[str, dict[str, Any]] = {
    "forward KL, top-k cache": {"losses": [{"type": "forward_kl"}]},
    "reverse KL, top-k cache": {"losses": [{"type": "reverse_kl"}]},
    "JSD (β 0.5), top-k cache": {"losses": [{"type": "jsd", "beta": 0.5}]},
    "forward KL, full logits": {"losses": [{"type": "forward_kl"}], "full_logits": True},
    "reverse KL, full logits": {"losses": [{"type": "reverse_kl"}], "full_logits": True},
    "JSD (β 0.5), full logits": {"losses": [{"type": "jsd", "beta": 0.5}], "full_logits": True},
}
BLACK_BOX = {"black-box, teacher's answers with working": True, "black-box, answers only": False}
TOP_K = [name for name, how in WHITE_BOX.items() if "full_logits" not in how]
# the cheap methods first: a run cut short still compares SFT, black-box and top-k
METHODS = [SFT, *BLACK_BOX, *TOP_K, *(name for name in WHITE_BOX if name not in TOP_K), WORKED]


def working(a: int, b: int, digits: int) -> str:
    """The column sums from the right: ``7+5=12;4+8+1=13;0+2+1=3``."""
    steps, carry = [], 0
    for i in range(digits):
        x, y = a // 10**i % 10, b // 10**i % 10
        total = x + y + carry
        steps.append(f"{x}+{y}+{carry}={total}" if carry else f"{x}+{y}={total}")
        carry = total // 10
    return ";".join(steps)


def record(a: int, b: int, digits: int, *, with_working: bool = True) -> dict[str, Any]:
    answer = str(a + b)
    content = f"<think>\n{working(a, b, digits)}\n</think>\n{answer}" if with_working else answer
    return {
        "messages": [
            {"role": "user", "content": f"{a:0{digits}d}+{b:0{digits}d}"},
            {"role": "assistant", "content": content},
        ]
    }


def problems(digits: int, train: int, test: int, seed: int) -> tuple[list[tuple[int, int]], ...]:
    """``train`` and ``test`` distinct operand pairs, disjoint."""
    space = 10 ** (2 * digits)
    if train + test > space // 2:
        raise SystemExit(f"only {space} distinct prompts with {digits} digits; ask for fewer records")
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    pairs: list[tuple[int, int]] = []
    while len(pairs) < train + test:
        pair = (rng.randrange(10**digits), rng.randrange(10**digits))
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs[:train], pairs[train:]


def final_answer(text: str) -> str:
    """The text after the last ``</think>`` (all of it when there is none), stripped."""
    return text.rsplit("</think>", 1)[-1].strip()


def answer_exact_match(
    model: Any, tok: Any, pairs: list[tuple[int, int]], digits: int, max_length: int
) -> dict[str, float]:
    """Share of ``pairs`` whose greedy answer is the true sum; generated tokens per second."""
    examples = encode([record(a, b, digits) for a, b in pairs], tok, max_length)
    model = model.to(CPU).eval()
    hits = generated = 0
    began = time.perf_counter()
    for start in range(0, len(examples), 64):
        chunk = examples[start : start + 64]
        room = max_length - max(ex.prompt_length for ex in chunk)
        outs = generate(
            model, [ex.ids[: ex.prompt_length] for ex in chunk], tok, max_new_tokens=room, device=CPU
        )
        generated += sum(len(o) for o in outs)
        for out, (a, b) in zip(outs, pairs[start : start + 64], strict=True):
            hits += final_answer(decode(tok, out)) == str(a + b)
    seconds = time.perf_counter() - began
    return {"exact_match": hits / len(pairs), "generated_tokens_per_second": generated / seconds}


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


def job_spec(
    max_length: int, epochs: int, lr: float, seed: int, *, teacher: bool, batch_size: int
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": "causal_lm",
        "data": {"train": {"file": "bench"}},
        "model": {"arch": "pretrained", "file": "start", "max_length": max_length},
        "training": {"epochs": epochs, "batch_size": batch_size, "learning_rate": lr, "seed": seed},
    }
    if teacher:
        spec["teacher"] = {"job": "teacher"}
    return spec


def load_or_train_teacher(args: argparse.Namespace, tok: Any, data: LoadedLMData, root: Path) -> Any:
    """The teacher trained on the reference records, from ``--teacher-dir`` when it holds one made with the
    same settings."""
    from transformers import AutoModelForCausalLM

    settings = {
        k: getattr(args, k)
        for k in ("digits", "train", "teacher_layers", "teacher_hidden", "teacher_epochs", "teacher_lr")
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(args.teacher_dir) / key
    if (folder / "config.json").exists():
        print(f"teacher: reusing {folder}", flush=True)
        return AutoModelForCausalLM.from_pretrained(folder).eval()
    began = time.monotonic()
    model = tiny_causal_lm(
        tok, layers=args.teacher_layers, hidden=args.teacher_hidden, heads=4, context=args.max_length
    )
    start = LoadedLM(model, tok, "start", "start", "model.file", describe(model, "char"))
    spec = job_spec(
        args.max_length, args.teacher_epochs, args.teacher_lr, 0, teacher=False, batch_size=args.batch_size
    )
    LMPipeline(context(spec, root, "teacher"), data=data, teacher=None, student_start=start).run(
        time.monotonic()
    )
    save_pretrained(model, tok, folder)
    print(f"teacher: trained in {time.monotonic() - began:.0f} s, kept in {folder}", flush=True)
    return model.eval()


def teacher_answers(
    teacher: Any, tok: Any, pairs: list[tuple[int, int]], args: argparse.Namespace, root: Path
) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """The teacher's answers to the training prompts as ``worker.endpoint_teacher`` collects them: the
    first ``--served`` from ``distill serve-model``'s app on loopback, the rest by the same greedy decoding
    in-process; and how many served answers the in-process path reproduces."""
    from serving_support import running

    from distill.serving import ChatModel, build_app, load_model_dir
    from worker.endpoint_teacher import Answer, AnswerLog, EndpointTeacher, Prompt, collect, split_reasoning

    prompts = [Prompt.from_record(record(a, b, args.digits)) for a, b in pairs]
    served = min(args.served, len(prompts))
    model, tokenizer = load_model_dir(save_pretrained(teacher, tok, root / "served-teacher"))
    settings = EndpointSettings(
        base_url="http://127.0.0.1/v1",
        model="teacher",
        max_tokens=args.max_length - len(prompts[0].messages[0][1]) - 8,
        temperature=0,
        concurrency=4,
    )
    began = time.monotonic()
    with running(build_app(ChatModel(model, tokenizer, "teacher"))) as url:
        settings = settings.model_copy(update={"base_url": f"{url}/v1"})
        got = collect(
            prompts[:served], EndpointTeacher(settings, None), AnswerLog(LocalStore(root), "t", "j")
        )
    served_seconds = time.monotonic() - began
    examples = encode([record(a, b, args.digits) for a, b in pairs], tok, args.max_length)
    local: list[Answer] = []
    began = time.monotonic()
    for start in range(0, len(examples), 64):
        chunk = examples[start : start + 64]
        outs = generate(
            teacher,
            [ex.ids[: ex.prompt_length] for ex in chunk],
            tok,
            max_new_tokens=args.max_length - max(ex.prompt_length for ex in chunk),
            device=CPU,
        )
        for out in outs:
            completion, reasoning = split_reasoning({"content": decode(tok, out)})
            local.append(Answer(completion, reasoning, "stop"))
    local_seconds = time.monotonic() - began
    agree = sum(
        (s.completion.strip(), (s.reasoning or "").strip())
        == (m.completion.strip(), (m.reasoning or "").strip())
        for s, m in zip(got.answers, local[:served], strict=True)
    )
    answers = list(got.answers) + local[served:]
    correct = sum(final_answer(a.completion) == str(x + y) for a, (x, y) in zip(answers, pairs, strict=True))
    facts = {
        "served": served,
        "served_per_second": served / served_seconds,
        "in_process_per_second": len(pairs) / local_seconds,
        "agree": agree,
        "correct": correct,
    }
    return prompts, answers, facts


@dataclass
class Problem:
    """The task's records, the same in every process of a run (drawn from seed 0)."""

    tok: Any
    train_pairs: list[tuple[int, int]]
    test_pairs: list[tuple[int, int]]
    test_records: list[dict[str, Any]]
    worked: LoadedLMData  # the reference answers with worked solutions: the teacher's training data


def problem(args: argparse.Namespace) -> Problem:
    tok = char_tokenizer()
    train_pairs, test_pairs = problems(args.digits, args.train, args.test, seed=0)
    test_records = [record(a, b, args.digits) for a, b in test_pairs]
    worked = LoadedLMData(
        train=LMDataset([record(a, b, args.digits) for a, b in train_pairs]),
        validation=LMDataset(test_records),
    )
    return Problem(tok, train_pairs, test_pairs, test_records, worked)


def run_seed(
    seed: int, args: argparse.Namespace, prompts: list[Any], answers: list[Any]
) -> tuple[dict[str, dict[str, Any]], int | None]:
    """Every method's student of one seed: its figures by method, and the cache's bytes per token. Runs in
    its own process with ``--parallel``: the teacher comes from ``--teacher-dir``."""
    from transformers.utils import logging as hf_logging

    from worker.endpoint_teacher import training_records

    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    task = problem(args)
    tok = task.tok
    root = Path(tempfile.mkdtemp(prefix=f"bench-llm-{seed}-"))
    teacher_model = load_or_train_teacher(args, tok, task.worked, root)
    teacher = LoadedLM(
        teacher_model, tok, "teacher-sha", "teacher", "teacher.job", describe(teacher_model, "char")
    )

    def with_train(records: list[dict[str, Any]]) -> LoadedLMData:
        return LoadedLMData(train=LMDataset(records), validation=LMDataset(task.test_records))

    taught = {
        name: with_train(training_records(prompts, answers, with_reasoning=keep))
        for name, keep in BLACK_BOX.items()
    }
    method_data = {
        SFT: with_train([record(a, b, args.digits, with_working=False) for a, b in task.train_pairs]),
        WORKED: task.worked,
        **taught,
        # white-box jobs read the teacher_answers.jsonl a black-box job leaves: the teacher's worked answers
        **{name: taught["black-box, teacher's answers with working"] for name in WHITE_BOX},
    }
    student_config = GPT2StudentConfig.model_validate(
        {
            "arch": "gpt2",
            "n_layer": args.student_layers,
            "n_embd": args.student_hidden,
            "n_head": 4,
            "max_length": args.max_length,
        }
    )
    rows: dict[str, dict[str, Any]] = {}
    cache_bytes: int | None = None
    for name in METHODS:
        fresh = build_student(student_config, teacher_model, tok, seed=seed)
        start = LoadedLM(fresh, tok, "fresh", "fresh", "model.file", describe(fresh, "char"))
        white = WHITE_BOX.get(name)
        spec = job_spec(
            args.max_length,
            args.student_epochs,
            args.student_lr,
            seed,
            teacher=white is not None,
            batch_size=args.batch_size,
        )
        if white is not None:
            spec["distillation"] = {"temperature": 1.0, **white}
            if "full_logits" not in white:
                spec["distillation"]["top_k"] = args.top_k
        t0 = time.monotonic()
        out = LMPipeline(
            context(spec, root, f"{name}-{seed}"),
            data=method_data[name],
            teacher=teacher if white is not None else None,
            student_start=start,
        ).run(time.monotonic())
        if "teacher_cache_bytes_per_token" in out.result:
            cache_bytes = out.result["teacher_cache_bytes_per_token"]
        fig = answer_exact_match(fresh, tok, task.test_pairs, args.digits, args.max_length)
        rows[name] = {
            **fig,
            "parameters": out.result["parameters"],
            "tokens_per_second": out.result["tokens_per_second"],
        }
        print(
            f"  seed {seed} {name}: answer exact match {fig['exact_match']:.3f} "
            f"({time.monotonic() - t0:.0f} s)",
            flush=True,
        )
    return rows, cache_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", type=int, default=3)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--teacher-layers", type=int, default=4)
    parser.add_argument("--teacher-hidden", type=int, default=64)
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--student-hidden", type=int, default=40)
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--teacher-lr", type=float, default=3e-3)
    parser.add_argument("--student-epochs", type=int, default=16)
    parser.add_argument("--student-lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=72)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--top-k", type=int, default=16)
    parser.add_argument(
        "--served", type=int, default=200, help="training prompts asked of the served teacher"
    )
    parser.add_argument("--teacher-dir", default=str(Path(tempfile.gettempdir()) / "distill-bench-llm"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="seeds trained at once, each in its own process (--threads each)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    task = problem(args)
    tok, train_pairs, test_pairs = task.tok, task.train_pairs, task.test_pairs
    root = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    began = time.monotonic()
    teacher_model = load_or_train_teacher(args, tok, task.worked, root)
    teacher = LoadedLM(
        teacher_model, tok, "teacher-sha", "teacher", "teacher.job", describe(teacher_model, "char")
    )
    t_fig = answer_exact_match(teacher_model, tok, test_pairs, args.digits, args.max_length)
    test_examples = encode(task.test_records, tok, args.max_length)
    t_tps = token_metrics(teacher_model, test_examples, pad_id=int(tok.pad_token_id), device=CPU)
    t_em = t_fig["exact_match"]
    print(f"teacher: {teacher.info.parameters:,} parameters, answer exact match {t_em:.3f}", flush=True)
    prompts, answers, bb = teacher_answers(teacher_model, tok, train_pairs, args, root)
    print(
        f"teacher's answers: {bb['served']} served ({bb['served_per_second']:.1f}/s), "
        f"{bb['agree']}/{bb['served']} the same in-process ({bb['in_process_per_second']:.0f}/s); "
        f"{bb['correct']}/{len(answers)} correct",
        flush=True,
    )
    seeds = range(args.seeds)
    if args.parallel > 1:
        with ProcessPoolExecutor(args.parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_seed, seed, args, prompts, answers) for seed in seeds]
            per_seed = [future.result() for future in futures]
    else:
        per_seed = [run_seed(seed, args, prompts, answers) for seed in seeds]
    rows = {name: [figures[name] for figures, _ in per_seed] for name in METHODS}
    cache_bytes = next((b for _, b in per_seed if b is not None), None)
    vocab = int(teacher_model.config.vocab_size)
    print(f"\ntotal {time.monotonic() - began:.0f} s\n")
    print(
        f"Addition of two {args.digits}-digit numbers: reference answers the sum alone, the teacher's with "
        f"column-by-column working; {args.train} train / "
        f"{args.test} held-out prompts (disjoint), {args.seeds} seed(s). Teacher: GPT-2 "
        f"{args.teacher_layers}x{args.teacher_hidden}, {teacher.info.parameters:,} parameters, "
        f"{args.teacher_epochs} epochs, answer exact match **{t_em:.3f}**, "
        f"{t_tps['tokens_per_second']:,.0f} tokens/s forward, "
        f"{t_fig['generated_tokens_per_second']:,.0f} generated tokens/s."
    )
    print()
    print(
        f"| student (GPT-2 {args.student_layers}x{args.student_hidden}, {args.student_epochs} epochs) "
        "| answer exact match | of teacher's | tokens/s forward | generated tokens/s |"
    )
    print("|---|---|---|---|---|")
    means: dict[str, float] = {}
    for name, runs in rows.items():
        ems = [r["exact_match"] for r in runs]
        means[name] = statistics.fmean(ems)
        spread = f" ± {statistics.stdev(ems):.3f}" if len(ems) > 1 else ""
        print(
            f"| {name} | {means[name]:.3f}{spread} | {means[name] / t_em if t_em else float('nan'):.0%} "
            f"| {statistics.fmean(r['tokens_per_second'] for r in runs):,.0f} "
            f"| {statistics.fmean(r['generated_tokens_per_second'] for r in runs):,.0f} |"
        )
    parameters = rows[SFT][0]["parameters"]
    print(
        f"\nStudent: {parameters:,} parameters ({parameters / teacher.info.parameters:.1%} of the "
        "teacher's). "
        f"Top-k cache (k = {args.top_k}): {cache_bytes} bytes per completion token, against {2 * vocab} for "
        f"the full logits in fp16 (vocabulary {vocab}; {2 * 32000:,} for a 32k vocabulary). Black-box: "
        f"{bb['served']} answers served on loopback ({bb['served_per_second']:.1f} prompts/s), "
        f"{bb['agree']} of them identical in-process ({bb['in_process_per_second']:.0f} prompts/s batched); "
        f"{bb['correct']}/{len(answers)} of the teacher's training answers correct."
    )
    best = max((v, k) for k, v in means.items() if k not in (SFT, WORKED))
    sft = means[SFT]
    ok = best[0] >= 0.9 * t_em and best[0] > sft
    print(
        f"best distilled: {best[1]} {best[0]:.3f} vs teacher {t_em:.3f} and SFT {sft:.3f}: "
        f"{'target met' if ok else 'target missed'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
