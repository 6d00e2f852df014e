"""Serving load: requests/s and p50/p99 latency at 1, 8 and 32 concurrent clients, and the server's tokens/s
against in-process batched generation at the same batch size.

    python benchmarks/serve_load.py --preset tiny --new-tokens 32

The server is ``safepretrain serve`` in its own process on a loopback port, over a random-weight model saved to a
temporary folder; the clients are httpx async clients in this process, sending chat requests through the OpenAI
API (the server's tokens/s is measured at the clients, HTTP and JSON included). Target: server tokens/s >= 0.8x in-process
generation at the same batch (the cost of HTTP, JSON, queueing and batching).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from random_model import random_model

from safepretrain.decode.config import DecodeConfig
from safepretrain.decode.decoder import Decoder, chat_prompt


def start_server(model_dir: Path, args) -> tuple[str, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(Path(sys.executable).parent / "safepretrain"), "serve", f"bench={model_dir}", "--port", str(port),
               "--max-batch", str(args.max_batch), "--max-tokens", str(args.new_tokens), "--threads", str(args.threads)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return url, server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start")


async def load(url: str, questions: list[str], clients: int, requests: int, new_tokens: int) -> dict:
    """``clients`` concurrent clients send ``requests`` chat requests in all; latency and throughput."""
    latencies, tokens = [], 0
    todo = list(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while todo:
            i = todo.pop()
            body = {"model": "bench", "messages": [{"role": "user", "content": questions[i % len(questions)]}],
                    "max_tokens": new_tokens}
            start = time.perf_counter()
            response = await http.post(url + "/v1/chat/completions", json=body)
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)
            tokens += response.json()["usage"]["completion_tokens"]

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    seconds = time.perf_counter() - start
    ordered = sorted(latencies)
    return {"requests_per_s": requests / seconds, "tokens_per_s": tokens / seconds,
            "p50": statistics.median(ordered), "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]}


def in_process(model, tokenizer, questions: list[str], batch: int, new_tokens: int, rounds: int) -> float:
    decoder = Decoder(model, tokenizer, DecodeConfig(max_new_tokens=new_tokens, batch_size=batch))
    prompts = [chat_prompt(tokenizer, q) for q in questions[:batch]]
    start, tokens = time.perf_counter(), 0
    for _ in range(rounds):
        tokens += sum(g.new_tokens for g in decoder.generate(prompts))
    return tokens / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer, questions = random_model(args.preset)
    before = in_process(model, tokenizer, questions, args.max_batch, args.new_tokens, rounds=4)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(Path(tmp) / "model")
        tokenizer.save_pretrained(Path(tmp) / "model")
        url, server = start_server(Path(tmp) / "model", args)
        try:
            print(f"model {args.preset}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
                  f"{args.threads} threads, max batch {args.max_batch}, {args.new_tokens} new tokens per answer")
            asyncio.run(load(url, questions, 2, 4, args.new_tokens))  # warm-up
            results = {}
            for clients in (1, 8, 32):
                results[clients] = r = asyncio.run(load(url, questions, clients, max(16, 2 * clients),
                                                        args.new_tokens))
                print(f"{clients:3d} clients: {r['requests_per_s']:7.2f} requests/s  p50 {r['p50'] * 1000:7.0f} ms  "
                      f"p99 {r['p99'] * 1000:7.0f} ms  {r['tokens_per_s']:8,.0f} tokens/s")
        finally:
            server.terminate()
            server.wait(timeout=30)
    # the reference runs before and after the server (their mean): a shared machine's load drifts
    after = in_process(model, tokenizer, questions, args.max_batch, args.new_tokens, rounds=4)
    reference = (before + after) / 2
    served = results[8]["tokens_per_s"]
    print(f"in-process generation, batch {args.max_batch}: {reference:8,.0f} tokens/s "
          f"(before {before:,.0f}, after {after:,.0f})")
    print(f"server at 8 clients / in-process at batch {args.max_batch}: {served / reference:.3f} "
          "(target >= 0.8)")


if __name__ == "__main__":
    main()
