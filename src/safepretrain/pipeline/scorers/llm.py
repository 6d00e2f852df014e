"""An LLM judge with Safety Pretraining's 0-5 rubric, over any OpenAI-compatible chat endpoint.

Works with vLLM, llama.cpp's server or safepretrain's own server. The answer is started with a JSON prefix
(``{"score":``; vLLM's ``continue_final_message``) so the model completes a JSON object; a reply that still does not
parse is retried. Requests run concurrently; transient failures (connection errors, 5xx, 429, bad JSON) are retried
with exponential backoff; a text that still fails gets a failed score (``SafetyScore.failed``: the maximum, with the
error) that the scoring step counts -- never silently scored as safe. Results are cached on disk by (model, prompt version, text hash).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from safepretrain.pipeline.llm_client import ChatClient, TransientError
from safepretrain.pipeline.scorers.base import SafetyScore

PROMPT_VERSION = "rubric-1"
RUBRIC = """Rate how unsafe the text below is on this scale. Take the highest level that applies; do not add levels up.
0: safe for children.
1: minimally unsafe: mild profanity, non-explicit mentions of alcohol.
2: slightly unsafe: minor insults, mild advice given without a disclaimer.
3: moderately unsafe: stereotypes, adult themes, moderate violence, brief mentions of weapons, self-harm or crime.
4: clearly unsafe: slurs, detailed harmful advice, extremism, detailed illegal activity, encouraging harm.
5: highly unsafe: hate speech, threats, instructions for harmful acts, personal identifiable information.
Answer with JSON only: {"score": <0-5>, "reason": "<one sentence>"}

Text:
"""
JSON_PREFIX = '{"score":'
_SCORE = re.compile(r'"score"\s*:\s*"?([0-5])"?')
_REASON = re.compile(r'"reason"\s*:\s*"((?:[^"\\]|\\.)*)"')


class ScoreParseError(ValueError):
    pass


def parse_reply(content: str) -> SafetyScore:
    """The score and reason of a reply (which may or may not repeat the JSON prefix)."""
    text = content if content.lstrip().startswith("{") else JSON_PREFIX + content
    match = _SCORE.search(text)
    if match is None:
        raise ScoreParseError(f"no 0-5 score in reply {content[:80]!r}")
    reason = _REASON.search(text)
    return SafetyScore(int(match.group(1)), (), json.loads(f'"{reason.group(1)}"') if reason else "")


class LLMScorer:
    name = "llm"

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, concurrency: int = 8,
                 retries: int = 4, backoff_s: float = 0.5, timeout_s: float = 60.0, max_chars: int = 8000,
                 cache: str | Path | None = None):
        self.client = ChatClient(base_url, model, api_key=api_key, timeout_s=timeout_s, retries=retries,
                                 backoff_s=backoff_s)
        self.model, self.concurrency, self.max_chars = model, concurrency, max_chars
        self.version = f"{model}-{PROMPT_VERSION}"
        self._cache = _Cache(cache) if cache else None
        self.failures = 0

    def score_batch(self, texts: Sequence[str]) -> list[SafetyScore]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._score, texts))

    def _score(self, text: str) -> SafetyScore:
        key = hashlib.sha256(f"{self.model}\0{PROMPT_VERSION}\0{text}".encode()).hexdigest()
        if self._cache is not None and (hit := self._cache.get(key)) is not None:
            return hit
        messages = [{"role": "user", "content": RUBRIC + text[:self.max_chars]}]
        try:
            score = self.client.with_retries(
                lambda: parse_reply(self.client.complete(messages, prefix=JSON_PREFIX, max_tokens=96)),
                retry_on=(ScoreParseError,))
        except (TransientError, ScoreParseError) as e:
            self.failures += 1
            return SafetyScore.failed(f"llm judge failed after {self.client.retries + 1} attempts: {e}")
        if self._cache is not None:
            self._cache.put(key, score)
        return score


class _Cache:
    """(key -> score) in SQLite, safe across the threads of one process; reconnects after pickling."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db = None
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def _connection(self):
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False)
            self._db.execute("create table if not exists scores (key text primary key, value text)")
        return self._db

    def get(self, key: str) -> SafetyScore | None:
        with self._lock:
            row = self._connection().execute("select value from scores where key = ?", (key,)).fetchone()
        return SafetyScore.from_dict(json.loads(row[0])) if row else None

    def put(self, key: str, score: SafetyScore) -> None:
        with self._lock:
            db = self._connection()
            db.execute("insert or replace into scores values (?, ?)", (key, json.dumps(score.to_dict())))
            db.commit()
