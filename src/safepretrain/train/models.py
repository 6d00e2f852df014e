"""Model presets: Llama-architecture causal LMs from ~1M parameters (CPU tests) to SmolLM2-1.7B.

Each preset is a function of the vocabulary size returning a ``transformers.LlamaConfig`` derived from one base, so
a model trained here is an ordinary Hugging Face model (``save_pretrained`` / ``from_pretrained``).
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import LlamaConfig


def base_config(vocab_size: int, **shape) -> LlamaConfig:
    """What all presets share: SwiGLU, RMSNorm, RoPE, tied embeddings, no dropout (so CPU runs are deterministic)."""
    defaults = dict(
        vocab_size=vocab_size, hidden_act="silu", rms_norm_eps=1e-5, rope_theta=10_000.0,
        tie_word_embeddings=True, attention_dropout=0.0, initializer_range=0.02, use_cache=True,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    return LlamaConfig(**{**defaults, **shape})


def _shape(layers: int, d: int, heads: int, kv_heads: int, ffn: int, context: int, **extra) -> dict:
    return dict(num_hidden_layers=layers, hidden_size=d, num_attention_heads=heads, num_key_value_heads=kv_heads,
                intermediate_size=ffn, max_position_embeddings=context, **extra)


def tiny(vocab_size: int) -> LlamaConfig:
    """~1M parameters (with a ~1k vocabulary): unit tests, and the laptop MedSafetyWorld demo (3M tokens in about
    8 minutes on one CPU core)."""
    return base_config(vocab_size, **_shape(layers=4, d=128, heads=4, kv_heads=2, ffn=384, context=256))


def small(vocab_size: int) -> LlamaConfig:
    """~10M parameters: a laptop MedSafetyWorld model with 12x the demo's compute per token."""
    return base_config(vocab_size, **_shape(layers=6, d=384, heads=6, kv_heads=2, ffn=1024, context=256))


def m50(vocab_size: int) -> LlamaConfig:
    """The ``paper`` experiment preset's model: 24 layers, d=256, 8 heads, 4 KV groups, FFN 1024, context 512 (24.7M
    parameters at its 4,096-token vocabulary; the name is older than the count)."""
    return base_config(vocab_size, **_shape(layers=24, d=256, heads=8, kv_heads=4, ffn=1024, context=512))


def smollm2_135m(vocab_size: int = 49_152) -> LlamaConfig:
    return base_config(vocab_size, rope_theta=100_000.0,
                       **_shape(layers=30, d=576, heads=9, kv_heads=3, ffn=1536, context=2048))


def smollm2_360m(vocab_size: int = 49_152) -> LlamaConfig:
    return base_config(vocab_size, rope_theta=100_000.0,
                       **_shape(layers=32, d=960, heads=15, kv_heads=5, ffn=2560, context=2048))


def smollm2_1_7b(vocab_size: int = 49_152) -> LlamaConfig:
    """The seed papers' model shape (SRP, Safety Pretraining): 24 layers, d=2048, 32 heads, FFN 8192."""
    return base_config(vocab_size, rope_theta=130_000.0,
                       **_shape(layers=24, d=2048, heads=32, kv_heads=32, ffn=8192, context=2048))


PRESETS: dict[str, Callable[[int], LlamaConfig]] = {
    "tiny": tiny, "small": small, "50m": m50,
    "135m": smollm2_135m, "360m": smollm2_360m, "1.7b": smollm2_1_7b,
}


def preset_config(name: str, vocab_size: int) -> LlamaConfig:
    try:
        return PRESETS[name](vocab_size)
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def count_parameters(config: LlamaConfig) -> int:
    """Exact parameter count, computed without allocating the model."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


def flops_per_token(config: LlamaConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (non-embedding parameters + LM head) + attention scores (PaLM appendix B)."""
    d, layers, ffn = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * ffn
    matmul_params = layers * per_layer + d * config.vocab_size
    return 6 * matmul_params + 12 * layers * d * seq_len
