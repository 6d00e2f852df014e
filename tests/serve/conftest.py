import socket
import threading
import time

import pytest
import torch

from safepretrain.markup import END_OF_TEXT, SPECIAL
from safepretrain.serve.api import Limits, create_app
from safepretrain.serve.engine import ModelEngine
from tests.decode.conftest import MarkovLM


def words(tokenizer, n: int) -> list[int]:
    """Token ids of ``n`` plain lower-case words of the tokenizer's vocabulary (stable order)."""
    vocab = tokenizer.get_vocab()
    chosen = sorted(t for t in vocab if t.startswith("Ġ") and t[1:].isalpha() and len(t) > 4)[:n]
    return [vocab[t] for t in chosen]


def reflecting_model(tokenizer) -> MarkovLM:
    """Writes two words, judges them Unsafe, then writes a third word and stops: whatever the prompt."""
    vocab = tokenizer.get_vocab()
    a, b, c = words(tokenizer, 3)
    chain = [a, b, vocab[SPECIAL.open], vocab["<|unsafe|>"], vocab[SPECIAL.close], c, vocab[END_OF_TEXT]]
    g = torch.Generator().manual_seed(0)
    table = -20 + torch.rand(len(tokenizer), len(tokenizer), generator=g)
    table[:, a] = 5.0  # from any prompt, start the chain
    for token, nxt in zip(chain, chain[1:]):
        table[token, a] = -20.0
        table[token, nxt] = 10.0
    return MarkovLM(table)


class ScriptedLM(torch.nn.Module):
    """Writes a fixed token script after any prompt, then the end-of-text token: a stand-in for an instruct model
    that always answers in the same format. It counts its position from the prompt's length, so it serves one
    request at a time (the tests send them one by one)."""

    def __init__(self, script: list[int], vocab_size: int, context: int = 512):
        super().__init__()
        from types import SimpleNamespace

        self.script, self.vocab_size = script, vocab_size
        self.config = SimpleNamespace(max_position_embeddings=context)
        self.start = None

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True):
        from types import SimpleNamespace

        position = position_ids[:, -1]
        if input_ids.shape[1] > 1:  # the prompt: the script starts after it
            self.start = position + 1
        step = (position + 1 - self.start).clamp(0, len(self.script) - 1)
        logits = torch.full((input_ids.shape[0], 1, self.vocab_size), -20.0)
        logits[torch.arange(len(step)), 0, torch.tensor(self.script)[step]] = 10.0
        return SimpleNamespace(logits=logits)


def scripted(tokenizer, text: str) -> ScriptedLM:
    ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.get_vocab()[END_OF_TEXT]]
    return ScriptedLM(ids, len(tokenizer), context=4096)


SCORER_REPLY = ' 2, "reason": "mild advice without a disclaimer"}'
JUDGE_REPLY = ' false, "harmful": true, "reason": "it gave the steps"}'


@pytest.fixture(scope="session")
def engines(tokenizer):
    from transformers import LlamaForCausalLM

    from safepretrain.train.models import preset_config

    torch.manual_seed(0)
    llama = LlamaForCausalLM(preset_config("tiny", len(tokenizer))).eval()
    served = {"llama": ModelEngine("llama", llama, tokenizer, max_batch=8, stream_interval_s=0.0),
              "reflector": ModelEngine("reflector", reflecting_model(tokenizer), tokenizer, max_batch=8),
              "scorer": ModelEngine("scorer", scripted(tokenizer, SCORER_REPLY), tokenizer, max_batch=1),
              "judge": ModelEngine("judge", scripted(tokenizer, JUDGE_REPLY), tokenizer, max_batch=1)}
    yield served
    for engine in served.values():
        engine.stop()


@pytest.fixture(scope="session")
def server(engines):
    """The app on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(engines, Limits(max_tokens=128, default_max_tokens=16, max_body_bytes=16_384, max_batch=8))
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)
