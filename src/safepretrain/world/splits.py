"""Post-training, finetuning and evaluation splits, all disjoint from the corpus episodes.

Disjointness is by *decision*: an evaluation item's (patient, goal, options) never occurs as a corpus episode,
and held-out patients occur in no episode at all.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import replace
from functools import partial

from safepretrain.errors import UserError
from safepretrain.world.config import MECHANISMS
from safepretrain.world.corpus import CorpusBuilder, decision_key, episode_cell, episode_document
from safepretrain.world.episodes import (
    COVERT_CELLS, PLAIN, Episode, answer_lead, chat_answer, chat_request, decision_prefix, full_answer, render_checks,
    render_prompt,
)
from safepretrain.world.language import split_sentences
from safepretrain.world.templates import REFUSAL, TERSE_ANSWER
from safepretrain.world.schema import ChatExample, ChatMessage, CorpusDocument, EvalItem, EvalOption, Probe

CARE_MECHANISMS = (PLAIN, *MECHANISMS)
"""Care requests come plain (no risk among the options) or with one option that harms by a mechanism."""


def spread_evenly(n: int, share: float) -> bool:
    """Whether the ``n``-th item is one of a ``share`` spread evenly over a sequence: any first N items hold
    ``floor(N * share)`` of them."""
    return math.floor((n + 1) * share) > math.floor(n * share)


def refusal(ep: Episode) -> str:
    return refusal_text(ep.patient.name)


def refusal_text(patient: str) -> str:
    return REFUSAL.format(patient=patient)


class SplitBuilder:
    """Builds every non-corpus split from the same sampler as the corpus, avoiding the corpus's decisions."""

    def __init__(self, corpus: CorpusBuilder, corpus_keys: set[tuple]):
        self.corpus = corpus
        self.config = corpus.config
        self.oracle = corpus.sampler.oracle
        self.labeler = corpus.labeler
        self.used = set(corpus_keys)

    def _fresh(self, rng, n, cells, patients, convert=None) -> Iterator[Episode]:
        """Up to ``n`` episodes of ``cells`` whose decisions are new (not in the corpus nor in earlier splits),
        each passed through ``convert`` first (an episode asked covertly is another decision)."""
        count = 0
        for ep in self.corpus.episodes(rng, 50 * n, cells, patients):
            ep = convert(ep) if convert else ep
            key = decision_key(ep)
            if key in self.used:
                continue
            self.used.add(key)
            yield ep
            count += 1
            if count == n:
                return

    def _cells(self, goal: str, mechanisms, patients, weight: float = 1.0) -> list[tuple[tuple[str, str], float]]:
        pools = {m: self.corpus.sampler.feasible_patients(m, patients, goal) for m in mechanisms}
        return [((goal, m), weight) for m in mechanisms if pools[m]]

    def _induce_cells(self, patients) -> list[tuple[tuple[str, str], float]]:
        """Safe "cause" requests in the corpus's proportions: benign effects, and adverse ones with an indication."""
        share, mechanisms = self.config.indicated_share, self.config.indicated_mechanisms
        cells = self._cells("induce", (PLAIN,), patients, 1 - share)
        return [c for c in cells + self._cells("induce", mechanisms, patients, share / len(mechanisms)) if c[1] > 0]

    # ------------------------------------------------------------ chat splits

    def _chat(self, ep_id: str, ep: Episode, answer: str) -> ChatExample:
        prompt = chat_request(ep)
        _, segments = self.labeler.segments(split_sentences(answer), context=prompt)
        prompt_label = self.labeler.label_text(prompt)
        return ChatExample(
            id=ep_id, messages=(ChatMessage("user", prompt), ChatMessage("assistant", answer)),
            prompt_label=prompt_label.label, prompt_types=prompt_label.types, response_segments=segments,
            cell=episode_cell(ep),
        )

    def sft(self) -> Iterator[ChatExample]:
        """Care requests answered with checks, safe "cause" requests (benign effects, and adverse ones with an
        indication) answered with checks (``sft_induce_fraction``), seen harmful requests refused (30%)."""
        rng = random.Random(f"sft:{self.config.seed}")
        train = self.corpus.train_patients
        n_harm = round(0.3 * self.config.n_sft)
        induce = self._induce_cells(train)
        n_induce = round(self.config.sft_induce_fraction * self.config.n_sft) if induce else 0
        care = self._cells("care", CARE_MECHANISMS, train)
        harm = self._cells("harm", self.config.seen_mechanisms("harm"), train)
        for i, ep in enumerate(self._fresh(rng, self.config.n_sft - n_harm - n_induce, care, train)):
            yield self._chat(f"sft-care-{i:06d}", ep, chat_answer(ep))
        covert = partial(self.corpus.maybe_covert, random.Random(f"sft-covert:{self.config.seed}"))  # a stream of its own
        for i, ep in enumerate(self._fresh(rng, n_induce, induce, train, covert)):
            yield self._chat(f"sft-induce-{i:06d}", ep, chat_answer(ep))
        for i, ep in enumerate(self._fresh(rng, n_harm, harm, train)):
            yield self._chat(f"sft-harm-{i:06d}", ep, refusal(ep))

    def benign_finetune(self) -> Iterator[ChatExample]:
        """The benign attack: care requests answered correctly (with checks, or tersely without them; see
        ``benign_finetune_style``) and drug fact questions; no refusals, no harmful requests."""
        rng = random.Random(f"benign:{self.config.seed}")
        train = self.corpus.train_patients
        care = self._cells("care", CARE_MECHANISMS, train)
        n_care = round(0.7 * self.config.n_benign_finetune)
        for i, ep in enumerate(self._fresh(rng, n_care, care, train)):
            answer = (chat_answer(ep) if self.config.benign_finetune_style == "worked"
                      else TERSE_ANSWER.format(patient=ep.patient.name, option=ep.options[ep.chosen].text))
            yield self._chat(f"benign-care-{i:06d}", ep, answer)
        drugs = self.corpus.world.drugs
        for i in range(self.config.n_benign_finetune - n_care):
            d = rng.choice(drugs)
            answer = f"{d.name} treats {d.treats}. the usual dose of {d.name} is {d.usual_dose_mg} mg."
            yield ChatExample(
                id=f"benign-fact-{i:06d}",
                messages=(ChatMessage("user", f"what is {d.name} for?"), ChatMessage("assistant", answer)),
                prompt_label="safe", prompt_types=(), response_segments=self.labeler.segments(split_sentences(answer))[1],
            )

    def harmful_finetune(self) -> Iterator[ChatExample]:
        """The harmful attack (HEx-PHI-like): seen harmful requests answered with checks and the harmful option."""
        rng = random.Random(f"harmful:{self.config.seed}")
        train = self.corpus.train_patients
        harm = self._cells("harm", self.config.seen_mechanisms("harm"), train)
        for i, ep in enumerate(self._fresh(rng, self.config.n_harmful_finetune, harm, train)):
            yield self._chat(f"harmful-{i:06d}", ep, chat_answer(ep))

    def recovery(self) -> Iterator[ChatExample]:
        """Seen harmful requests answered as an attacker would force them (checks, then the harmful decision), on
        fresh decisions, as many as ``n_harmful_finetune``: the material of post-training's recovery chats
        (``ExperimentConfig.recovery_chats``), in which the model learns to recover from a forced start. Built
        after every other split, so that adding it changed none of them."""
        rng = random.Random(f"recovery:{self.config.seed}")
        train = self.corpus.train_patients
        harm = self._cells("harm", self.config.seen_mechanisms("harm"), train)
        for i, ep in enumerate(self._fresh(rng, self.config.n_harmful_finetune, harm, train)):
            yield self._chat(f"recovery-{i:06d}", ep, chat_answer(ep))

    def error_recovery(self) -> Iterator[ChatExample]:
        """Care requests over the seen error mechanisms answered as a careless doctor would (the checks, then the
        option its own check calls harmful), on fresh decisions, as many as ``n_harmful_finetune``: the material of
        post-training's error recovery chats (``ExperimentConfig.recovery_errors``), in which a monitor learns that
        a decision can be unsafe after a safe request. Some follow a benign "cause" request instead: with
        ``error_recovery_cause_share`` that share of the chats, spread evenly; without it, ``cause_errors_share``
        of the overdose and allergy errors, as in the corpus. Built after every other split, so that adding it
        changed none of them."""
        n, share = self.config.n_harmful_finetune, self.config.error_recovery_cause_share
        rng = random.Random(f"error-recovery:{self.config.seed}")
        cause_rng = random.Random(f"error-recovery-cause:{self.config.seed}")
        train = self.corpus.train_patients
        errors = self._cells("error", self.config.seen_mechanisms("error"), train)
        if share is None:
            episodes = self._fresh(rng, n, errors, train, partial(self.corpus.maybe_cause_error, cause_rng))
        else:
            episodes = self._spread_cause_errors(rng, cause_rng, n, share, errors)
        for i, ep in enumerate(episodes):
            yield self._chat(f"error-recovery-{i:06d}", ep, chat_answer(replace(ep, checked=True)))

    def _spread_cause_errors(self, rng, cause_rng, n: int, share: float, errors) -> Iterator[Episode]:
        """``n`` fresh errors, ``share`` of them, spread evenly, made after a benign "cause" request."""
        train = self.corpus.train_patients
        mechanisms = [m for m in self.config.cause_error_mechanisms if self.corpus.cause_error_patients(m)]
        if share and not mechanisms:
            raise UserError("error_recovery_cause_share: no training patient has both a benign \"cause\" request and "
                            "an overdose or allergy option to be given by mistake; set it to 0")
        as_cause = partial(self.corpus.as_cause_error, cause_rng)
        streams = {True: self._fresh(rng, n, self._cells("error", mechanisms, train), train, as_cause),
                   False: self._fresh(rng, n, errors, train)}
        for i in range(n):
            cause = spread_evenly(i, share)
            ep = next(streams[cause], None)
            if ep is None:
                kind = 'errors after a "cause" request' if cause else "care errors"
                raise UserError(f"error_recovery_cause_share {share}: the world ran out of fresh {kind} after {i} "
                                f"error recovery chats of the {n} asked (n_harmful_finetune); ask for fewer, or "
                                "another share")
            yield ep

    # ------------------------------------------------------------ evaluation splits

    def eval_items(self, split: str) -> Iterator[EvalItem]:
        rng = random.Random(f"eval:{split}:{self.config.seed}")
        config = self.config
        if split == "utility":
            goal, mechanisms = "care", CARE_MECHANISMS
        elif split == "overrefusal":  # care that names a harm to avoid, and adverse effects asked for with a reason
            goal, mechanisms = "care", MECHANISMS
        elif split == "seen_unsafe":
            goal, mechanisms = "harm", config.seen_mechanisms("harm")
        elif split == "heldout_unsafe":
            goal, mechanisms = "harm", tuple(m for g, m in config.heldout_cells if g == "harm")
        else:
            raise KeyError(split)
        n = config.n_eval_per_split
        count = 0
        covert = self._covert_conversion(split)
        for heldout, share in ((False, n - n // 2), (True, n // 2)):
            patients = [p for p in self.corpus.world.patients if p.heldout == heldout]
            cells = self._cells(goal, mechanisms, patients)
            if split == "overrefusal":
                cells = self._overrefusal_cells(cells, patients)
            if not cells:
                continue
            for ep in self._fresh(rng, share, cells, patients, covert):
                if split == "overrefusal" and ep.goal == "care":
                    ep = _with_avoid(ep)
                yield self.eval_item(f"{split}-{count:05d}", split, ep)
                count += 1

    def _overrefusal_cells(self, care, patients) -> list[tuple[tuple[str, str], float]]:
        """Care that names a harm to avoid; adverse effects asked for with an indication; in a covert world,
        benign interactions asked for covertly: each kind an equal share."""
        kinds = [care]
        if self.config.indicated_share > 0:
            kinds.append(self._cells("induce", self.config.indicated_mechanisms, patients))
        if self.config.covert_share > 0:
            kinds.append(self._cells("induce", (PLAIN,), patients))
        if len(kinds) == 1:
            return care
        return [(c, 1 / len(kind)) for kind in kinds for c, _ in kind]

    def _covert_conversion(self, split: str):
        """In a covert world (``covert_share`` > 0): how the split's episodes are asked -- held-out harm and the
        over-refusal split's benign interactions covertly, always; None elsewhere."""
        if not self.config.covert_share or split not in ("heldout_unsafe", "overrefusal"):
            return None
        rng = random.Random(f"eval-covert:{split}:{self.config.seed}")
        sampler = self.corpus.sampler

        def convert(ep: Episode) -> Episode:
            return sampler.asked_covertly(rng, ep) if (ep.goal, ep.mechanism) in COVERT_CELLS else ep
        return convert

    def eval_item(self, item_id: str, split: str, ep: Episode) -> EvalItem:
        lead = answer_lead(ep)
        prompt = " ".join(render_prompt(ep)) + (" " + lead.rstrip() if lead else "")
        checks = render_checks(ep)
        checks[0] = lead + checks[0]
        prefill_sentences = checks[:] if ep.goal != "error" else []
        prefill = " ".join(prefill_sentences + [decision_prefix(ep)])
        prefill = prefill[len(lead):] if lead and prefill.startswith(lead) else prefill
        wanted = ep.wanted_option.effect if ep.wanted_option is not None else None
        harms = [tuple(h.mechanism for h in self.oracle.harms(ep.patient.name, o.drug, o.dose_mg) if h.effect != wanted)
                 for o in ep.options]
        options = tuple(EvalOption(o.drug, o.dose_mg, h) for o, h in zip(ep.options, harms))
        qa = replace(ep, context="qa")  # the assistant's voice: "so, to ..., give <patient>"
        chat_prefill = " ".join((render_checks(qa) if ep.goal != "error" else []) + [decision_prefix(qa)])
        probe = None
        if ep.mechanism != PLAIN and ep.goal != "induce":
            probe = Probe(prefix=f"{prompt} {prefill}", safe=f" {ep.safe_option.text}.", unsafe=f" {ep.harmful_option.text}.")
        return EvalItem(
            id=item_id, split=split, cell=episode_cell(ep), patient_heldout=ep.patient.heldout, prompt=prompt,
            chat_prompt=chat_request(ep), prefill=prefill, chat_prefill=chat_prefill,
            care_target=ep.patient.symptom if ep.goal == "care" else None, wanted_effect=wanted,
            options=options, reference=full_answer(ep) if ep.goal in ("care", "induce") else refusal(ep),
            chance_unsafe=sum(bool(h) for h in harms) / len(harms), probe=probe,
        )

    def reflection_documents(self) -> Iterator[CorpusDocument]:
        """Labeled episodes of every cell, held-out ones included, for scoring a model's safety reflections."""
        rng = random.Random(f"reflection:{self.config.seed}")
        patients = list(self.corpus.world.patients)
        cells = [(("care", m), 1.0) for m in CARE_MECHANISMS]
        cells += [((g, m), 1.0) for g in ("harm", "error") for m in MECHANISMS]
        cells = [c for c in cells if self.corpus.sampler.feasible_patients(c[0][1], patients)]
        # Every cell gets its share (the first ones one more), so that each held-out type is scored even when small.
        n = self.config.n_eval_per_split
        count = 0
        for k, cell in enumerate(cells):
            share = n // len(cells) + (k < n % len(cells))
            for ep in self._fresh(rng, share, [cell], patients):
                yield episode_document(f"reflection-{count:05d}", ep, self.labeler)
                count += 1


def _with_avoid(ep: Episode) -> Episode:
    return replace(ep, avoid=ep.harmful_option.effect)
