"""Text data for the text engine: JSONL reading, and English sentences made from templates (no download).

The template sentences stand in for a corpus in tests and benchmarks: subjects x verbs x objects x places x
times x manners over several sentence frames (statements, questions, negations, subordinate clauses,
imperatives), so a few thousand unique sentences share little more than their vocabulary.

:func:`doc_sentences` adds real English prose without a download: sentences from the docstrings of
Python's own standard library (technical, but written by people, with a vocabulary of several thousand
words).
"""

from __future__ import annotations

import ast
import functools
import json
import random
import re
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_SUBJECTS = [
    "the old fisherman",
    "my younger sister",
    "a tired nurse",
    "the new manager",
    "our neighbour",
    "the little boy",
    "a famous chef",
    "the quiet student",
    "my grandfather",
    "the pilot",
    "a stray dog",
    "the city council",
    "two engineers",
    "the farmer",
    "a young musician",
    "the detective",
    "her best friend",
    "the angry customer",
    "a group of tourists",
    "the teacher",
    "the software team",
    "a curious cat",
    "the mayor",
    "my roommate",
    "the librarian",
    "a retired soldier",
    "the committee",
    "the doctor",
    "a local artist",
    "the coach",
    "the scientists",
    "his parents",
    "a shy painter",
    "the bus driver",
    "the startup founder",
]
# (present third person / past) forms and the objects each can take.
_VERBS = [
    ("repairs", "repaired"),
    ("paints", "painted"),
    ("cleans", "cleaned"),
    ("sells", "sold"),
    ("buys", "bought"),
    ("carries", "carried"),
    ("finds", "found"),
    ("loses", "lost"),
    ("builds", "built"),
    ("describes", "described"),
    ("studies", "studied"),
    ("opens", "opened"),
    ("photographs", "photographed"),
    ("borrows", "borrowed"),
    ("hides", "hid"),
    ("inspects", "inspected"),
    ("delivers", "delivered"),
    ("designs", "designed"),
    ("returns", "returned"),
    ("watches", "watched"),
    ("writes about", "wrote about"),
    ("argues about", "argued about"),
    ("forgets", "forgot"),
    ("orders", "ordered"),
    ("wraps", "wrapped"),
    ("measures", "measured"),
    ("explains", "explained"),
]
_OBJECTS = [
    "the wooden boat",
    "a broken bicycle",
    "the kitchen window",
    "an old map",
    "the quarterly report",
    "a bag of apples",
    "the red umbrella",
    "a handwritten letter",
    "the garden fence",
    "a cup of coffee",
    "the new laptop",
    "a pair of boots",
    "the school budget",
    "a birthday cake",
    "the museum painting",
    "a stack of books",
    "the train schedule",
    "a leaking pipe",
    "the concert tickets",
    "a strange noise",
    "the family recipe",
    "a wedding dress",
    "the solar panels",
    "a lost wallet",
    "the football",
    "a bowl of soup",
    "the bridge design",
    "a mountain of paperwork",
    "the broken clock",
    "a silver ring",
    "the election results",
    "a basket of bread",
    "the hospital records",
    "a paper kite",
    "the chess board",
]
_PLACES = [
    "in the harbour",
    "at the train station",
    "behind the library",
    "near the river",
    "in a small village",
    "on the rooftop",
    "at the airport",
    "in the crowded market",
    "inside the museum",
    "at the office",
    "in the forest",
    "by the lake",
    "in the hospital",
    "at the stadium",
    "on the beach",
    "in the basement",
    "downtown",
    "in the mountains",
    "at the bakery",
    "in the classroom",
]
_TIMES = [
    "before sunrise",
    "last night",
    "every morning",
    "on Sunday",
    "after lunch",
    "during the storm",
    "in the summer",
    "yesterday",
    "at midnight",
    "this afternoon",
    "in 1998",
    "twice a week",
    "after the meeting",
    "during the holidays",
    "late in the evening",
    "early this year",
]
_HABITS = ["every morning", "on Sundays", "twice a week", "after work", "every summer", "most evenings"]
_MANNERS = [
    "quietly",
    "carefully",
    "in a hurry",
    "without a word",
    "with great patience",
    "reluctantly",
    "for the first time",
    "as quickly as possible",
    "with a smile",
    "again",
    "secretly",
    "proudly",
]
_REASONS = [
    "because it was raining",
    "since nobody else would",
    "although it was late",
    "so that the children could sleep",
    "because the deadline was close",
    "while the others were away",
    "even though it was expensive",
    "because the old one had failed",
    "after a long argument",
    "to impress the visitors",
]
_ADJECTIVES = [
    "beautiful",
    "dangerous",
    "expensive",
    "ridiculous",
    "fascinating",
    "boring",
    "heavy",
    "fragile",
    "enormous",
    "delicious",
    "mysterious",
    "useless",
    "brilliant",
    "noisy",
    "ancient",
    "perfect",
]


_PLURAL = frozenset({"two engineers", "a group of tourists", "the scientists", "his parents"})


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _sentence(rng: random.Random) -> str:
    s, (present, past), o = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)
    place, time, manner = rng.choice(_PLACES), rng.choice(_TIMES), rng.choice(_MANNERS)
    reason, adjective = rng.choice(_REASONS), rng.choice(_ADJECTIVES)
    base = present.split(" ")[0]
    if base.endswith("ies"):
        base = base[:-3] + "y"
    elif base.endswith(("shes", "ches", "xes")):
        base = base[:-2]
    else:
        base = base[:-1]
    rest = present[len(present.split(" ")[0]) :]
    plural = s in _PLURAL
    if plural:
        present = base + rest
    frame = rng.randrange(10)
    if frame == 0:
        return _cap(f"{s} {past} {o} {place} {time}.")
    if frame == 1:
        return _cap(f"{s} {manner} {past} {o} {reason}.")
    if frame == 2:
        return _cap(f"did {s} really {base}{rest} {o} {place}?")
    if frame == 3:
        return _cap(f"{s} {present} {o} {rng.choice(_HABITS)}, {manner}.")
    if frame == 4:
        return _cap(f"{time}, {s} {past} {o} {place}.")
    if frame == 5:
        return _cap(f"{s} never {present} {o} {place}.")
    if frame == 6:
        return _cap(f"{o} was {adjective}, so {s} {past} it {time}.")
    if frame == 7:
        return _cap(f"why {'do' if plural else 'does'} {s} {base}{rest} {o} {time}?")
    if frame == 8:
        return _cap(f"please {base}{rest} {o} {place} {manner}.")
    return _cap(f"everyone said that {o} {place} was {adjective}.")


def template_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` unique English sentences from templates, in a seeded order (deterministic for a seed).

    The space holds far more than a million sentences, so disjoint train and held-out sets come from one
    call (slice it) or from two seeds (overlap is possible but rare; slice one call to be sure).
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        sentence = _sentence(rng)
        if sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    return out


_NOT_PROSE = re.compile(r"[^A-Za-z ,.'\-;:?!()]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


@functools.cache
def _stdlib_doc_sentences() -> tuple[str, ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3"}
    out: dict[str, None] = {}
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            for para in re.split(r"\n\s*\n", doc):
                if para.startswith(" ") or ">>>" in para:  # code, not prose
                    continue
                for sentence in _SENTENCE_END.split(" ".join(para.split())):
                    words = sentence.split()
                    if (
                        6 <= len(words) <= 30
                        and sentence[0].isupper()
                        and sentence[-1] in ".?!"
                        and not _NOT_PROSE.search(sentence)
                    ):
                        out[sentence] = None
    return tuple(out)


def doc_sentences(n: int | None = None, seed: int = 0) -> list[str]:
    """Unique English sentences from the standard library's docstrings (several thousand), shuffled by
    ``seed``; the first ``n`` of them (all when None). Takes a few seconds the first time (parsing)."""
    sentences = list(_stdlib_doc_sentences())
    random.Random(seed).shuffle(sentences)
    return sentences if n is None else sentences[:n]


_POSITIVE = [
    "wonderful",
    "delightful",
    "excellent",
    "charming",
    "superb",
    "pleasant",
    "brilliant",
    "lovely",
    "impressive",
    "fantastic",
    "generous",
    "friendly",
]
_NEGATIVE = [
    "terrible",
    "awful",
    "disappointing",
    "dreadful",
    "boring",
    "rude",
    "horrible",
    "broken",
    "miserable",
    "useless",
    "unpleasant",
    "poor",
]
_REVIEW_TOPICS = [
    "the service",
    "the food",
    "the hotel room",
    "the concert",
    "the new phone",
    "the movie",
    "the staff",
    "the delivery",
    "the book",
    "the coffee",
    "the repair",
    "the tour guide",
    "the software update",
    "the train journey",
    "the museum visit",
    "the haircut",
]
_REVIEW_FRAMES = [
    "{topic} was {word}.",
    "Honestly, {topic} was {word} {time}.",
    "I thought {topic} {place} was {word}.",
    "My friends agreed that {topic} was {word}.",
    "{Topic} felt {word} and I told everyone about it.",
    "We found {topic} {word}, {reason}.",
]


def sentiment_examples(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """A synthetic two-class task: review-like sentences labeled 1 (positive) or 0 (negative), balanced."""
    rng = random.Random(seed)
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    while len(texts) < n:
        label = len(texts) % 2
        topic = rng.choice(_REVIEW_TOPICS)
        text = rng.choice(_REVIEW_FRAMES).format(
            topic=topic,
            Topic=_cap(topic),
            word=rng.choice(_POSITIVE if label else _NEGATIVE),
            time=rng.choice(_TIMES),
            place=rng.choice(_PLACES),
            reason=rng.choice(_REASONS),
        )
        text = _cap(text)
        if text in seen:
            continue
        seen.add(text)
        texts.append(text)
        labels.append(label)
    return texts, labels


@dataclass
class TextDataset:
    """Texts with optional integer labels; ``classes`` names each label index (``str`` of the raw label)."""

    texts: list[str]
    labels: list[int] | None
    classes: list[str] | None

    def __len__(self) -> int:
        return len(self.texts)


def read_text_jsonl(source: Path | str | Iterable[str], *, classes: list[str] | None = None) -> TextDataset:
    """Read JSONL lines ``{"text": ..., "label": ...}`` (``label`` optional on every line or on none).

    Labels may be integers or strings; they are mapped to indices ``0..k-1`` in sorted order (integers
    numerically), unless ``classes`` gives the mapping (e.g. the training set's, for a validation set).
    Raises ``ValueError`` naming the line for malformed input.
    """
    if isinstance(source, Path | str):
        with open(source, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    else:
        lines = list(source)
    texts: list[str] = []
    raw_labels: list[object] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ValueError(f'line {number}: expected an object with a string "text"')
        texts.append(row["text"])
        if "label" in row:
            label = row["label"]
            if isinstance(label, bool) or not isinstance(label, int | str):
                raise ValueError(f"line {number}: label must be an integer or a string")
            raw_labels.append(label)
    if not texts:
        raise ValueError("no examples: the file has no JSON lines")
    if not raw_labels:
        return TextDataset(texts=texts, labels=None, classes=classes)
    if len(raw_labels) != len(texts):
        raise ValueError(f"{len(texts) - len(raw_labels)} of {len(texts)} lines have no label")
    if classes is None:
        kinds = {type(label) for label in raw_labels}
        if len(kinds) > 1:
            raise ValueError("labels mix integers and strings")
        classes = [str(label) for label in sorted(set(raw_labels))]  # type: ignore[type-var]
    index = {name: i for i, name in enumerate(classes)}
    labels: list[int] = []
    for label in raw_labels:
        if str(label) not in index:
            raise ValueError(f"label {label!r} is not one of the classes {classes}")
        labels.append(index[str(label)])
    return TextDataset(texts=texts, labels=labels, classes=classes)
