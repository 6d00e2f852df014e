"""An OpenAI-compatible HTTP API over the toolkit's decoders, and the Safe Playground page.

``/v1/chat/completions``, ``/v1/completions`` (both with ``stream``) and ``/v1/models`` follow the OpenAI API, so
its clients work unchanged. The decoding is chosen per request with extra body fields (the OpenAI Python client's
``extra_body``):

    mode        plain | guarded | beam | safebeam            (default plain: greedy unless temperature > 0)
    policy      stop | refuse                                guarded: what happens on a non-Safe reflection
    suppress    ["reflection"] and/or ["tag"]                 the suppression attack
    prefill     text forced as the start of the answer        the prefilling attack
    reflect_every       N: ask for a reflection at the first sentence end N tokens after the last one (SRP's guard)
    reflect_on_request  true: ask for the verdict on the request before the answer (not under a prefill)
    beams, candidates, top_k, seed

Every answer carries a ``safepretrain`` field: the toolkit's finish reason (``unsafe_reflection`` when guarded
decoding stopped the model, ``harmful_tag`` for Safe Beam), the model's reflections with character offsets into
``prefill + answer``, ``stopped_at`` and ``flagged``. The OpenAI ``finish_reason`` of a stopped answer is
``content_filter``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safepretrain.decode.config import DecodeConfig, Generation
from safepretrain.serve.engine import DONE, Job, ModelEngine

OPENAI_FINISH = {"stop": "stop", "length": "length", "unsafe_reflection": "content_filter",
                 "harmful_tag": "content_filter"}


@dataclass(frozen=True)
class Limits:
    max_tokens: int = 512
    """The most tokens one answer may have; a request asking for more is refused (400)."""
    default_max_tokens: int = 128
    max_body_bytes: int = 64 * 1024
    max_batch: int = 8
    """Requests decoded together in one batch."""


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


# ---------------------------------------------------------------- request bodies


class _Decoding(BaseModel):
    """Fields shared by both endpoints; unknown OpenAI fields (top_p, logprobs, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_k: int = Field(0, ge=0)
    seed: int | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    mode: Literal["plain", "guarded", "beam", "safebeam"] = "plain"
    policy: Literal["stop", "refuse"] = "stop"
    refusal: str | None = Field(None, max_length=500)
    suppress: list[Literal["reflection", "tag"]] = []
    prefill: str = ""
    beams: int = Field(4, ge=1, le=16)
    candidates: int = Field(4, ge=1, le=64)
    reflect_every: int = Field(0, ge=0, le=4096)
    reflect_on_request: bool = False


class _Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[dict]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = [p.get("text") for p in self.content if p.get("type") == "text"]
        if len(parts) != len(self.content) or not all(isinstance(p, str) for p in parts):
            raise ApiError(400, "only text content parts are supported", "messages")
        return "".join(parts)


class ChatRequest(_Decoding):
    messages: list[_Message] = Field(min_length=1)
    continue_final_message: bool = False
    """vLLM's convention: the last (assistant) message is the start of the answer, which the model continues; it
    is treated as a prefill (reflections in it are not the model's) and the reply holds only the continuation."""


class CompletionRequest(_Decoding):
    prompt: str | list[str]

    def text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise ApiError(400, "send one prompt per request (a list of one string at most)", "prompt")
        return self.prompt[0]


# ---------------------------------------------------------------- the app


def create_app(engines: dict[str, ModelEngine], limits: Limits = Limits()) -> FastAPI:
    app = FastAPI(title="safepretrain", docs_url=None, redoc_url=None)
    app.state.engines = engines

    @app.exception_handler(ApiError)
    async def api_error(_request, error: ApiError):
        body = {"error": {"message": error.message, "type": "invalid_request_error" if error.status < 500
                          else "server_error", "param": error.param, "code": error.code}}
        return JSONResponse(body, status_code=error.status)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "safepretrain",
             "safepretrain": {"path": e.info.path, "reflection_format": e.info.reflection_format,
                              "context": e.info.context}}
            for name, e in engines.items()]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "queued": {name: e.queued() for name, e in engines.items()}}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await _parse(request, ChatRequest, limits)
        engine = _engine(engines, body.model)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        if not engine.tokenizer.chat_template:
            raise ApiError(400, f"model {body.model!r} has no chat template; use /v1/completions", "model")
        if body.continue_final_message:
            if messages[-1]["role"] != "assistant" or len(messages) < 2:
                raise ApiError(400, "continue_final_message needs a final assistant message to continue", "messages")
            body.prefill = messages.pop()["content"] + body.prefill
        prompt = engine.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return await _answer(engine, body, prompt, "chat", limits)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _parse(request, CompletionRequest, limits)
        engine = _engine(engines, body.model)
        return await _answer(engine, body, body.text(), "text", limits)

    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse("/playground")

    @app.get("/playground", include_in_schema=False)
    async def playground():
        return HTMLResponse(resources.files("safepretrain.serve").joinpath("playground.html").read_text())

    async def _answer(engine: ModelEngine, body: _Decoding, prompt: str, kind: str, limits: Limits):
        job = engine.submit(_job(engine, body, prompt, limits))
        answer_id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        if body.stream:
            return StreamingResponse(_sse(job, answer_id, created, body.model, kind),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        generation = await _collect(job)
        return _completion(generation, job, answer_id, created, body.model, kind)

    return app


async def _parse(request, schema: type[_Decoding], limits: Limits):
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise ApiError(413, f"request body over {limits.max_body_bytes} bytes")
    raw = await request.body()
    if len(raw) > limits.max_body_bytes:
        raise ApiError(413, f"request body over {limits.max_body_bytes} bytes")
    try:
        return schema.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        raise ApiError(400, f"{where + ': ' if where else ''}{first['msg']}", where) from None


def _engine(engines: dict[str, ModelEngine], name: str) -> ModelEngine:
    if name not in engines:
        raise ApiError(404, f"model {name!r} is not served here; served: {', '.join(engines)}", "model",
                       "model_not_found")
    return engines[name]


def _job(engine: ModelEngine, body: _Decoding, prompt: str, limits: Limits) -> Job:
    max_tokens = body.max_completion_tokens or body.max_tokens or limits.default_max_tokens
    if max_tokens > limits.max_tokens:
        raise ApiError(400, f"max_tokens {max_tokens} is over this server's limit of {limits.max_tokens}",
                       "max_tokens")
    beam = body.mode in ("beam", "safebeam")
    settings = dict(
        mode=body.mode, policy=body.policy, suppress=tuple(sorted(set(body.suppress))), beams=body.beams,
        candidates=body.candidates, temperature=0.0 if beam else body.temperature, top_k=body.top_k,
        seed=body.seed or 0, batch_size=limits.max_batch, max_new_tokens=limits.max_tokens,
        reflect_every=body.reflect_every, reflect_on_request=body.reflect_on_request,
    )
    if body.refusal is not None:
        settings["refusal"] = body.refusal
    try:
        config = DecodeConfig(**settings)
    except ValueError as error:
        raise ApiError(400, str(error)) from None
    if body.mode == "safebeam" and not engine.has_harmful_tag:
        raise ApiError(400, f"model {body.model!r} has no harmful tag token; safebeam needs one", "mode")
    n_prompt = len(engine.tokenizer(prompt + body.prefill, add_special_tokens=False)["input_ids"])
    room = engine.info.context - max_tokens
    if n_prompt == 0 or n_prompt > room:
        raise ApiError(400, f"the prompt has {n_prompt} tokens; with max_tokens {max_tokens} this model's context "
                       f"of {engine.info.context} allows 1 to {room}", "messages")
    return Job(prompt=prompt, config=config, max_tokens=max_tokens, prefill=body.prefill, prompt_tokens=n_prompt,
               stream=body.stream)


async def _collect(job: Job) -> Generation:
    generation = None
    while (event := await job.events.get()) is not DONE:
        if isinstance(event, Exception):
            raise ApiError(500, f"decoding failed: {event}")
        if isinstance(event, Generation):
            generation = event
    return generation


def _extra(generation: Generation, job: Job) -> dict:
    fields = generation.to_dict()
    del fields["text"]
    return {**fields, "mode": job.config.mode, "flagged": generation.flagged, "prefill": job.prefill,
            "queue_seconds": round(job.started - job.submitted, 4) if job.started else None}


def _usage(generation: Generation, job: Job) -> dict:
    return {"prompt_tokens": job.prompt_tokens, "completion_tokens": generation.new_tokens,
            "total_tokens": job.prompt_tokens + generation.new_tokens}


def _completion(generation: Generation, job: Job, answer_id: str, created: int, model: str, kind: str) -> dict:
    finish = OPENAI_FINISH[generation.finish_reason]
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": generation.text}, "finish_reason": finish,
                  "logprobs": None}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": generation.text, "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    return {"id": answer_id, "object": obj, "created": created, "model": model, "choices": [choice],
            "usage": _usage(generation, job), "safepretrain": _extra(generation, job)}


async def _sse(job: Job, answer_id: str, created: int, model: str, kind: str):
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def chunk(text: str | None, finish: str | None = None, **extra) -> str:
        if kind == "chat":
            delta = {"role": "assistant", "content": ""} if text is None else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        payload = {"id": answer_id, "object": obj, "created": created, "model": model, "choices": [choice], **extra}
        return f"data: {json.dumps(payload)}\n\n"

    if kind == "chat":
        yield chunk(None)
    while (event := await job.events.get()) is not DONE:
        if isinstance(event, Exception):
            error = {"error": {"message": f"decoding failed: {event}", "type": "server_error"}}
            yield f"data: {json.dumps(error)}\n\n"
            return
        if isinstance(event, str):
            yield chunk(event)
        elif isinstance(event, Generation):
            yield chunk("", OPENAI_FINISH[event.finish_reason], usage=_usage(event, job),
                        safepretrain=_extra(event, job))
    yield "data: [DONE]\n\n"


__all__ = ["ApiError", "ChatRequest", "CompletionRequest", "Limits", "create_app"]
