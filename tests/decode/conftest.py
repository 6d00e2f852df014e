import pytest
import torch
from types import SimpleNamespace


class MarkovLM(torch.nn.Module):
    """A stand-in causal LM whose next-token logits depend on the last token only (a table), so that a test can
    decide exactly what the "model" wants to write. It speaks the slice of the HF interface the decoder uses."""

    def __init__(self, table: torch.Tensor, context: int = 512):
        super().__init__()
        self.table = table
        self.config = SimpleNamespace(max_position_embeddings=context)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True):
        return SimpleNamespace(logits=self.table[input_ids])


def markov_table(vocab_size: int, favoured: dict[int, dict[int, float]], seed: int = 0, base: float = -20.0) -> torch.Tensor:
    """Logits (vocab, vocab): every row near -20 with small noise, except the given {token: {next: logit}} entries."""
    g = torch.Generator().manual_seed(seed)
    table = base + torch.rand(vocab_size, vocab_size, generator=g)
    for token, nexts in favoured.items():
        for nxt, logit in nexts.items():
            table[token, nxt] = logit
    return table


@pytest.fixture
def ids(tokenizer):
    vocab = tokenizer.get_vocab()
    return lambda text: vocab[text] if text in vocab else tokenizer.encode(text, add_special_tokens=False)
