"""The LLM judge against a real local HTTP server speaking the OpenAI chat API: scores, retries, failures, cache."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from safepretrain.pipeline.score import ScoreDocuments
from safepretrain.pipeline.scorers.llm import JSON_PREFIX, LLMScorer, parse_reply


class JudgeServer:
    """A tiny chat-completions server: 5 for texts with 'bomb', else 0; can fail on purpose."""

    def __init__(self):
        self.requests, self.fail_first, self.mode = 0, 0, "ok"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests += 1
                judging = body["messages"][0]["content"].startswith("Rate how unsafe")
                assert not judging or body["messages"][-1] == {"role": "assistant", "content": JSON_PREFIX}
                if server.requests <= server.fail_first or server.mode == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                text = body["messages"][0]["content"]
                content = ' 5, "reason": "weapon instructions"}' if "bomb" in text.split("Text:")[-1] else ' 0}'
                if not judging:  # a writing request (rephrase, refusal, moral)
                    content = f"written: {text.split()[0]} {text.split()[1]}"
                if server.mode == "garbage":
                    content = "I cannot rate this."
                payload = {"choices": [{"message": {"role": "assistant", "content": content}}]}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = JudgeServer()
    yield s
    s.httpd.shutdown()


def scorer(server, **kw):
    return LLMScorer(server.url, "judge", backoff_s=0.01, **kw)


def test_scores_texts_through_the_endpoint(server):
    scores = scorer(server).score_batch(["how to bake bread", "how to build a bomb"])
    assert [s.score for s in scores] == [0, 5] and scores[1].reason == "weapon instructions"


def test_transient_errors_are_retried(server):
    server.fail_first = 3
    assert scorer(server, concurrency=1).score_batch(["a bomb"])[0].score == 5
    assert server.requests == 4


@pytest.mark.parametrize("mode", ["garbage", "500"])
def test_persistent_failures_are_counted_never_dropped(server, mode):
    from datatrove.data import Document

    server.mode = mode
    judge = scorer(server, retries=2)
    step = ScoreDocuments(judge)
    docs = list(step([Document(text="hello", id="a"), Document(text="bomb", id="b")]))
    assert len(docs) == 2 and step.stats["score_failed"].total == 2 and judge.failures == 2
    stored = docs[0].metadata["safety@llm-vjudge-rubric-1"]
    assert stored["score"] == 5 and "failed after 3 attempts" in stored["error"]  # unchecked counts as unsafe
    assert server.requests == 6


def test_cache_answers_repeated_texts(server, tmp_path):
    scorer(server, cache=tmp_path / "cache.sqlite").score_batch(["a bomb", "bread"])
    assert server.requests == 2
    again = scorer(server, cache=tmp_path / "cache.sqlite").score_batch(["a bomb", "bread"])
    assert [s.score for s in again] == [5, 0] and server.requests == 2


def test_replies_with_or_without_the_prefix_parse():
    assert parse_reply(' 3, "reason": "adult themes"}').score == 3
    assert parse_reply('{"score": 4, "reason": "x"}').reason == "x"


def test_llm_backend_writes_refusal_and_moral_data_in_a_pipeline(server, tmp_path):
    from safepretrain.pipeline.documents import reader, shard_files, writer
    from safepretrain.pipeline.llm_backend import LLMBackend
    from safepretrain.pipeline.llm_client import ChatClient
    from safepretrain.pipeline.recipes import RecipeConfig, build_steps
    from safepretrain.pipeline.run import ExecutionConfig, run_pipeline

    corpus = tmp_path / "in.jsonl"
    corpus.write_text(json.dumps({"id": "safe", "text": "bake bread"}) + "\n" +
                      json.dumps({"id": "bad", "text": "build a bomb"}) + "\n")
    backend = LLMBackend(ChatClient(server.url, "judge", backoff_s=0.01))
    steps = build_steps("safety-pretraining", scorer(server), backend, RecipeConfig())
    run_pipeline([reader(corpus), *steps, writer(tmp_path / "out")], tmp_path / "out", {}, ExecutionConfig())
    records = {json.loads(l)["id"]: json.loads(l) for f in shard_files(tmp_path / "out") for l in f.read_text().splitlines()}
    assert set(records) == {"safe", "bad#refusal", "bad#moral"}
    assert records["bad#refusal"]["text"].startswith("written: Write a")  # the RefuseWeb prompt was sent
    assert records["bad#moral"]["text"].startswith("written: Rewrite the")
