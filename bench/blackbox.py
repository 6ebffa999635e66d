"""Collecting a served teacher's answers (``worker.endpoint_teacher``) from ``distill serve-model``'s app on
loopback: prompts per second and completion tokens per second by ``concurrency``, and a resumed collection
(every answer read back from the object store, none asked again).

The teacher is a tiny GPT-2 over the character tokenizer (``tests/lm_support.py``, drawn at random: its
answers are as long as ``--max-tokens`` allows), served by :func:`distill.serving.build_app`, which generates
one request at a time; concurrency then only overlaps the HTTP round trips. Figures are ratios against
concurrency 1 in the same process (noisy on a shared machine).

    .venv/bin/python -m bench.blackbox [--prompts 60] [--max-tokens 32] [--concurrency 1 4 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lm_support import char_tokenizer, save_pretrained, tiny_causal_lm
from serving_support import running

from distill.serving import ChatModel, build_app, load_model_dir
from distill.spec import EndpointSettings
from distill.storage import LocalStore
from worker.endpoint_teacher import AnswerLog, EndpointTeacher, Prompt, collect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=60)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args(argv)
    tok = char_tokenizer()
    tmp = Path(tempfile.mkdtemp(prefix="bench-blackbox-"))
    model, tokenizer = load_model_dir(
        save_pretrained(tiny_causal_lm(tok, layers=2, hidden=64), tok, tmp / "m")
    )
    chat = ChatModel(model, tokenizer, "teacher")
    prompts = [Prompt.from_record({"prompt": f"{i % 10}+{i // 10}"}) for i in range(args.prompts)]
    rows, base = [], None
    with running(build_app(chat)) as url:
        warm = EndpointSettings(base_url=f"{url}/v1", model="teacher", max_tokens=4, temperature=0)
        collect(prompts[:4], EndpointTeacher(warm, None), AnswerLog(LocalStore(tmp / "warm"), "t", "warm"))
        for concurrency in args.concurrency:
            settings = EndpointSettings(
                base_url=f"{url}/v1",
                model="teacher",
                max_tokens=args.max_tokens,
                temperature=0,
                concurrency=concurrency,
            )
            store = LocalStore(tmp / f"c{concurrency}")
            got = collect(prompts, EndpointTeacher(settings, None), AnswerLog(store, "t", "j"))
            tokens = sum(
                len(tokenizer(a.completion, add_special_tokens=False)["input_ids"]) for a in got.answers
            )
            rate = len(prompts) / got.seconds
            base = base or rate
            rows.append((concurrency, got.seconds, rate, tokens / got.seconds, rate / base))
            again = collect(prompts, EndpointTeacher(settings, None), AnswerLog(store, "t", "j"))
            assert again.requested == 0 and again.resumed == len(prompts)
    print("| concurrency | seconds | prompts/s | completion tokens/s | ratio to concurrency 1 |")
    print("|---|---|---|---|---|")
    for concurrency, seconds, rate, token_rate, ratio in rows:
        print(f"| {concurrency} | {seconds:.2f} | {rate:.1f} | {token_rate:.0f} | {ratio:.2f} |")
    print(f"\nresumed collections: {len(prompts)} answers read back each, 0 prompts asked again")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
