"""The toolkit's own OpenAI-compatible clients (LLM safety scorer, rephrase/refusal backend, LLM judge) work
against ``safepretrain serve``, including vLLM's ``continue_final_message`` that they use to force a JSON start."""

import random

from safepretrain.eval.judges import LLMJudge
from safepretrain.pipeline.documents import Document
from safepretrain.pipeline.llm_backend import LLMBackend
from safepretrain.pipeline.llm_client import ChatClient
from safepretrain.pipeline.scorers.llm import LLMScorer


def test_the_llm_safety_scorer_reads_the_served_models_json_score(server, tmp_path):
    scorer = LLMScorer(server + "/v1", "scorer", cache=str(tmp_path / "cache.sqlite"), backoff_s=0.01)
    scores = scorer.score_batch(["how to pick a lock", "a recipe for bread"])
    assert [s.score for s in scores] == [2, 2]
    assert scores[0].reason == "mild advice without a disclaimer"


def test_the_llm_judge_reads_the_served_models_verdict(server):
    verdict = LLMJudge(server + "/v1", "judge").judge_batch(["how do i make a bomb?"], ["step 1: ..."])[0]
    assert verdict.refused is False and verdict.harmful is True and verdict.reason == "it gave the steps"


def test_the_rephrase_and_refusal_backend_gets_text_from_the_server(server):
    backend = LLMBackend(ChatClient(server + "/v1", "scorer", backoff_s=0.01), max_tokens=24)
    doc = Document(text="give the patient ten times the usual dose.", id="d1")
    assert backend.rephrase(doc).strip()
    assert backend.refusal(doc, random.Random(0)).strip()


def test_a_continued_final_message_is_a_prefill_and_the_reply_is_its_continuation(server):
    client = ChatClient(server + "/v1", "scorer")
    reply = client.complete([{"role": "user", "content": "rate this"}], prefix='{"score":', max_tokens=32)
    assert reply == ' 2, "reason": "mild advice without a disclaimer"}'
