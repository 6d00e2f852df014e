"""One model behind a request queue: a worker thread batches waiting requests and streams their tokens back.

Requests are served first come, first served. The worker takes the oldest waiting request and fills a batch with
the other waiting requests that decode the same way (same mode, policy, sampling), so a burst of clients shares
forward passes and none waits behind a request that arrived after it. Each batch runs to completion; a request's
own ``max_tokens`` ends its row early.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safepretrain.decode.config import DecodeConfig, Generation
from safepretrain.decode.decoder import Decoder, load_model
from safepretrain.markup import HARMFUL_TAG

DONE = object()
STREAM_INTERVAL_S = 0.02
BATCH_WAIT_S = 0.02
"""How long a short batch waits for more requests: the clients of a burst do not arrive in the same instant."""


@dataclass(eq=False)  # jobs are told apart by identity: two identical requests are still two jobs
class Job:
    """One request: its prompt and decoding settings, and the events the worker sends back to the web app."""

    prompt: str
    config: DecodeConfig
    max_tokens: int
    prefill: str = ""
    loop: asyncio.AbstractEventLoop | None = None
    events: asyncio.Queue | None = None
    """Text deltas (str), then the final Generation, then the end marker."""
    prompt_tokens: int = 0
    stream: bool = False
    """Send text as it is written (else only the finished answer)."""
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None
    """When its batch began decoding (queueing time = started - submitted)."""
    sent: str = ""
    last_sent: float = 0.0

    def emit(self, event: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


@dataclass(frozen=True)
class Served:
    """What ``/v1/models`` says of a model."""

    name: str
    path: str
    reflection_format: str
    context: int


class ModelEngine:
    def __init__(self, name: str, model, tokenizer, path: str | Path = "", max_batch: int = 8,
                 batch_wait_s: float = BATCH_WAIT_S, stream_interval_s: float = STREAM_INTERVAL_S):
        self.model, self.tokenizer = model, tokenizer
        self.batch_wait_s = batch_wait_s
        self.stream_interval_s = stream_interval_s
        """Least time between two streamed deltas (0: every token that completes a character)."""
        self.info = Served(name, str(path), Decoder(model, tokenizer).fmt.name, model.config.max_position_embeddings)
        self.has_harmful_tag = HARMFUL_TAG in tokenizer.get_vocab()
        """Safe Beam needs the tag as one token; known once, not per request (a vocabulary dict is large)."""
        self.max_batch = max_batch
        self.waiting: list[Job] = []
        self.ready = threading.Condition()
        self.decoders: OrderedDict[DecodeConfig, Decoder] = OrderedDict()
        self.stopped = False
        self.worker = threading.Thread(target=self._serve_forever, name=f"engine-{name}", daemon=True)
        self.worker.start()

    @classmethod
    def load(cls, name: str, path: str | Path, max_batch: int = 8, batch_wait_s: float = BATCH_WAIT_S) -> ModelEngine:
        model, tokenizer = load_model(path)
        return cls(name, model, tokenizer, path, max_batch, batch_wait_s)

    # ------------------------------------------------------------ the web app's side

    def submit(self, job: Job) -> Job:
        job.loop, job.events = asyncio.get_running_loop(), asyncio.Queue()
        with self.ready:
            self.waiting.append(job)
            self.ready.notify()
        return job

    def queued(self) -> int:
        with self.ready:
            return len(self.waiting)

    def stop(self) -> None:
        with self.ready:
            self.stopped = True
            self.ready.notify_all()

    # ------------------------------------------------------------ the worker's side

    def _serve_forever(self) -> None:
        while True:
            with self.ready:
                while not self.waiting and not self.stopped:
                    self.ready.wait()
                if self.stopped:
                    return
                deadline = time.monotonic() + self.batch_wait_s
                while len(self.waiting) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                    self.ready.wait(left)
                batch = self._next_batch()
            self._run(batch)

    def _next_batch(self) -> list[Job]:
        """The oldest job and the next waiting jobs that decode the same way (called with the lock held)."""
        key = self.waiting[0].config
        batch = [j for j in self.waiting if j.config == key][:self.max_batch]
        taken = {id(j) for j in batch}
        self.waiting = [j for j in self.waiting if id(j) not in taken]
        return batch

    def _run(self, batch: list[Job]) -> None:
        started = time.perf_counter()
        for job in batch:
            job.started = started
        try:
            decoder = self._decoder(batch[0].config)
            streams = batch[0].config.mode in ("plain", "guarded") and not self._holds_back(batch[0].config)
            on_token = None
            if streams and any(j.stream for j in batch):
                on_token = lambda i, watcher: batch[i].stream and self._stream(batch[i], watcher)  # noqa: E731
            generations = decoder.generate([j.prompt for j in batch], [j.prefill for j in batch],
                                           [j.max_tokens for j in batch], on_token=on_token)
            for job, generation in zip(batch, generations):
                self._finish(job, generation)
        except Exception as error:  # a failed batch must not leave its clients waiting forever
            for job in batch:
                job.emit(error)
                job.emit(DONE)

    @staticmethod
    def _holds_back(config: DecodeConfig) -> bool:
        """With the refuse policy nothing may reach the client before the whole answer is judged."""
        return config.mode == "guarded" and config.policy == "refuse"

    def _decoder(self, config: DecodeConfig) -> Decoder:
        if config not in self.decoders:
            self.decoders[config] = Decoder(self.model, self.tokenizer, config)
            if len(self.decoders) > 16:
                self.decoders.popitem(last=False)
        return self.decoders[config]

    def _stream(self, job: Job, watcher) -> None:
        # Every hand-over to the web app's thread costs a GIL switch: send what is new every few ms, not per token.
        now = time.perf_counter()
        if now - job.last_sent < self.stream_interval_s:
            return
        text = watcher.text()[len(job.prefill):].rstrip("\ufffd")  # a character cut between two tokens waits
        if len(text) > len(job.sent) and text.startswith(job.sent):
            job.emit(text[len(job.sent):])
            job.sent, job.last_sent = text, now

    @staticmethod
    def _finish(job: Job, generation: Generation) -> None:
        if generation.text.startswith(job.sent):
            if rest := generation.text[len(job.sent):]:
                job.emit(rest)
        job.emit(generation)
        job.emit(DONE)


__all__ = ["DONE", "Job", "ModelEngine", "Served"]
