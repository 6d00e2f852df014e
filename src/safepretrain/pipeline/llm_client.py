"""A small client for OpenAI-compatible chat endpoints (vLLM, llama.cpp server, safepretrain's server).

Transient failures (connection errors, HTTP 429 and 5xx, replies that are not chat completions) raise
``TransientError`` for the caller's retry loop; a 4xx the server will never accept raises RuntimeError at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class TransientError(Exception):
    pass


class ChatClient:
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 60.0,
                 retries: int = 4, backoff_s: float = 0.5):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.retries, self.backoff_s = model, retries, backoff_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout_s = timeout_s
        self._client = None

    @property
    def _http(self):
        # Made on first use, per process: pipeline steps are pickled to their worker processes.
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self._timeout_s, headers=self._headers)
        return self._client

    def __getstate__(self):
        return {**self.__dict__, "_client": None}

    def complete(self, messages: list[dict], *, prefix: str | None = None, max_tokens: int = 256,
                 temperature: float = 0.0) -> str:
        """The assistant's reply; with ``prefix`` the reply continues that start of the answer (vLLM's
        ``continue_final_message``)."""
        import httpx

        body = {"model": self.model, "temperature": temperature, "max_tokens": max_tokens, "messages": messages}
        if prefix is not None:
            body["messages"] = [*messages, {"role": "assistant", "content": prefix}]
            body |= {"continue_final_message": True, "add_generation_prompt": False}
        try:
            response = self._http.post(self.url, json=body)
        except httpx.HTTPError as e:
            raise TransientError(f"{type(e).__name__}: {e}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"HTTP {response.status_code}")
        if response.status_code >= 400:  # a request the server will never accept: retrying cannot help
            raise RuntimeError(f"{self.url}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            return response.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise TransientError(f"not an OpenAI chat completion: {response.text[:80]!r}") from None

    def with_retries(self, attempt: Callable[[], T], retry_on: tuple[type[Exception], ...] = ()) -> T:
        """``attempt()`` until it succeeds, backing off exponentially; re-raises the last error."""
        for i in range(self.retries + 1):
            try:
                return attempt()
            except (TransientError, *retry_on):
                if i == self.retries:
                    raise
                time.sleep(self.backoff_s * 2 ** i)
        raise AssertionError("unreachable")
