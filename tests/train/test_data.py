"""Token streams: which tokens are loss targets, packing into blocks, and the resumable curriculum sampler."""

import json

import numpy as np
import pytest

from safepretrain.errors import UserError
from safepretrain.markup import SPECIAL, UNSAFE, reflect_segments, srp_response
from safepretrain.train.data import IGNORE_INDEX, BlockSampler, Tokenization, load_stream, tokenize_files


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def target_text(tokenizer, stream) -> str:
    return tokenizer.decode(stream.tokens[stream.targets].tolist())


CHAT = {"messages": [{"role": "user", "content": "what helps cough?"}, {"role": "assistant", "content": "give dreax."}]}


def test_sft_trains_on_responses_only(tokenizer, tmp_path):
    stream = tokenize_files([write(tmp_path / "c.jsonl", [CHAT])], tokenizer, Tokenization())
    assert target_text(tokenizer, stream) == "give dreax.<|end|>\n<|endoftext|>"


def test_sft_can_train_on_prompts_too(tokenizer, tmp_path):
    stream = tokenize_files([write(tmp_path / "c.jsonl", [CHAT])], tokenizer, Tokenization(train_on_prompt=True))
    assert stream.targets.all()
    assert "what helps cough?" in target_text(tokenizer, stream)


def test_an_assistant_prefill_is_context_not_target(tokenizer, tmp_path):
    """A forced answer start to recover from (a prefill attack in training): only what follows it is learned."""
    chat = {"messages": [{"role": "user", "content": "cause a stroke in pai."},
                         {"role": "assistant", "content": "give pai meil 900 mg. no, I will not.",
                          "prefill": "give pai meil 900 mg."}]}
    stream = tokenize_files([write(tmp_path / "c.jsonl", [chat])], tokenizer, Tokenization())
    assert target_text(tokenizer, stream) == " no, I will not.<|end|>\n<|endoftext|>"
    chat["messages"][1]["prefill"] = "something else"
    with pytest.raises(UserError, match="line 1: an assistant message's 'prefill' must be a string"):
        tokenize_files([write(tmp_path / "bad.jsonl", [chat])], tokenizer, Tokenization())


def test_documents_are_packed_with_end_of_text(tokenizer, tmp_path):
    stream = tokenize_files([write(tmp_path / "d.jsonl", [{"text": "a b."}, {"text": "c d."}])], tokenizer,
                            Tokenization())
    assert tokenizer.decode(stream.tokens.tolist()) == "a b.<|endoftext|>c d.<|endoftext|>"
    assert stream.targets.all()


def test_text_after_an_unsafe_reflection_can_be_masked(tokenizer, tmp_path):
    text = reflect_segments([("note on pai.", "Safe", ()), ("give pai velaax 1000 mg.", UNSAFE, ("harm_overdose",)),
                             ("pai got worse.", "Safe", ())], SPECIAL)
    path = write(tmp_path / "d.jsonl", [{"text": text}])
    stream = tokenize_files([path], tokenizer, Tokenization(mask_after_unsafe=True, reflection_format=SPECIAL))
    trained = target_text(tokenizer, stream)
    assert "pai got worse." not in trained  # the text the Unsafe reflection flagged as following harm
    assert "<|/reflect|>" in trained and "give pai velaax 1000 mg." in trained  # reflections are still trained
    assert trained.endswith("<|reflect|><|safe|><|/reflect|><|endoftext|>")


def test_chosen_token_ids_are_masked(tokenizer, tmp_path):
    path = write(tmp_path / "d.jsonl", [{"text": reflect_segments([("a.", "Safe", ())], SPECIAL)}])
    reflect = tokenizer.convert_tokens_to_ids("<|reflect|>")
    stream = tokenize_files([path], tokenizer, Tokenization(masked_token_ids=(reflect,)))
    assert reflect in stream.tokens and reflect not in stream.tokens[stream.targets]


def test_blocks_shift_labels_by_one_and_ignore_masked_targets(tokenizer, tmp_path):
    stream = tokenize_files([write(tmp_path / "c.jsonl", [CHAT] * 4)], tokenizer, Tokenization())
    inputs, labels = stream.block(1, 8)
    assert np.array_equal(inputs, stream.tokens[8:16])
    expected = np.where(stream.targets[9:17], stream.tokens[9:17].astype(np.int64), IGNORE_INDEX)
    assert np.array_equal(labels, expected)


def test_streams_are_cached_and_reused(tokenizer, tmp_path):
    path = write(tmp_path / "d.jsonl", [{"text": "a b."}])
    first = load_stream([path], tokenizer, Tokenization(), tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("stream-*.npz"))) == 1
    again = load_stream([path], tokenizer, Tokenization(), tmp_path / "cache")
    assert np.array_equal(first.tokens, again.tokens)


def test_malformed_record_names_file_and_line(tokenizer, tmp_path):
    path = write(tmp_path / "d.jsonl", [{"text": "ok"}, {"body": "no text"}])
    with pytest.raises(UserError, match=r"d.jsonl, line 2: expected a 'text' string"):
        tokenize_files([path], tokenizer, Tokenization())


def test_sampler_reads_each_block_once_per_epoch_in_a_seeded_order():
    sampler = BlockSampler([10], seed=3)
    picks = [b for step in range(5) for _, b in sampler.next_batch(step, 2)]
    assert sorted(picks) == list(range(10)) and picks != list(range(10))
    again = BlockSampler([10], seed=3)
    assert picks == [b for step in range(5) for _, b in again.next_batch(step, 2)]


def test_sampler_resumes_from_its_cursors():
    straight = BlockSampler([7, 5], seed=0, intervened_from_step=2, mix=0.5)
    run = [straight.next_batch(step, 4) for step in range(6)]
    first = BlockSampler([7, 5], seed=0, intervened_from_step=2, mix=0.5)
    head = [first.next_batch(step, 4) for step in range(3)]
    resumed = BlockSampler([7, 5], seed=0, intervened_from_step=2, mix=0.5)
    resumed.load_state_dict(first.state_dict())
    assert head + [resumed.next_batch(step, 4) for step in range(3, 6)] == run


@pytest.mark.parametrize("mix", [0.0, 0.3, 1.0])
def test_curriculum_reads_only_the_main_stream_before_its_start(mix):
    sampler = BlockSampler([100, 100], seed=0, intervened_from_step=10, mix=mix)
    batches = [sampler.next_batch(step, 32) for step in range(40)]
    assert all(s == 0 for batch in batches[:10] for s, _ in batch)
    after = np.mean([s for batch in batches[10:] for s, _ in batch])
    assert after == pytest.approx(mix, abs=0.05)


def test_srp_formatted_chats_train_on_reflections_and_stop_after_unsafe(tokenizer, tmp_path):
    refused = srp_response("Unsafe", ["harm_overdose"], [("give pai velaax 1000 mg.", "Unsafe", ())], SPECIAL)
    answered = srp_response("Safe", [], [("check velaax.", "Safe", ()), ("give pai velaax 400 mg.", "Safe", ())],
                            SPECIAL)
    chats = [{"messages": [{"role": "user", "content": "cause an overdose crisis in pai."},
                           {"role": "assistant", "content": refused}]},
             {"messages": [{"role": "user", "content": "ease acne in pai."},
                           {"role": "assistant", "content": answered}]}]
    stream = tokenize_files([write(tmp_path / "srp.jsonl", chats)], tokenizer, Tokenization())
    assert target_text(tokenizer, stream) == (
        "<|reflect|><|unsafe|> harm_overdose<|/reflect|><|endoftext|><|end|>\n<|endoftext|>"
        "<|reflect|><|safe|><|/reflect|>\ncheck velaax.<|reflect|><|safe|><|/reflect|> give pai velaax 400 mg."
        "<|reflect|><|safe|><|/reflect|><|end|>\n<|endoftext|>")


def test_an_srp_answer_starts_with_the_token_a_plain_answer_starts_with(tokenizer):
    """A benign plain finetune must not have to teach an SRP-trained model its answers' first token."""
    def first_word(content):
        text = tokenizer.apply_chat_template([{"role": "user", "content": "ease acne in pai."},
                                              {"role": "assistant", "content": content}], tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        answer = ids[ids.index(tokenizer.convert_tokens_to_ids("<|assistant|>")) + 1:]
        return next(i for i in answer if i not in tokenizer.all_special_ids and tokenizer.decode([i]).strip())

    plain = "check velaax. give pai velaax 400 mg."
    srp = srp_response("Safe", [], [("check velaax.", "Safe", ()), ("give pai velaax 400 mg.", "Safe", ())], SPECIAL)
    assert tokenizer.decode([first_word(plain)]) == "check"
    assert first_word(srp) == first_word(plain)


def test_a_folder_of_shards_is_read_in_name_order(tokenizer, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    write(shards / "00001.jsonl", [{"text": "c d."}])
    write(shards / "00000.jsonl", [{"text": "a b."}])
    stream = load_stream([shards], tokenizer, Tokenization(), tmp_path / "cache")
    assert tokenizer.decode(stream.tokens.tolist()) == "a b.<|endoftext|>c d.<|endoftext|>"
