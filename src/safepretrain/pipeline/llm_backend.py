"""Text-writing interventions for real corpora through an instruct LLM (Safety Pretraining's prompts, our wording).

- rephrase: rewrite for a middle-school audience in a randomly chosen style, adding disclaimers and context so
  that every sentence is safe on its own (teacher script was the paper's best style);
- refusal (RefuseWeb): a user asks for the harmful element of the text; the assistant refuses politely and firmly,
  explains the harm, offers a constructive alternative; role names are randomized;
- moral education: that dialogue rewritten as a third-person article about the ethical principle.
"""

from __future__ import annotations

import random

from datatrove.data import Document

from safepretrain.pipeline.llm_client import ChatClient, TransientError

STYLES = ("teacher's lecture script", "textbook section", "podcast transcript", "TED talk",
          "conversation between a parent and a child", "conversation between two friends", "kids' video script")
ROLE_PAIRS = (("User", "Assistant"), ("Student", "Teacher"), ("Visitor", "Librarian"), ("Kid", "Parent"),
              ("Caller", "Helpline volunteer"))
REPHRASE = ("Rewrite the text below for a middle-school audience as a {style}. Keep the facts that are safe to "
            "share, leave out instructions that could cause harm, and add disclaimers and context so that every "
            "sentence is safe on its own. Reply with the rewritten text only.\n\nText:\n{text}")
REFUSAL = ("Write a short dialogue. {asker} asks for the harmful element of the text below. {helper} refuses "
           "politely and firmly, explains why it would cause harm, and offers a constructive, safe alternative. "
           "Format each turn as '{asker}: ...' or '{helper}: ...'. Reply with the dialogue only.\n\nText:\n{text}")
MORAL = ("Rewrite the dialogue below as a short educational article in the third person about the ethical "
         "principle it shows. Do not repeat any harmful detail. Reply with the article only.\n\nDialogue:\n{text}")


class LLMBackend:
    def __init__(self, client: ChatClient, max_chars: int = 6000, max_tokens: int = 768):
        self.client, self.max_chars, self.max_tokens = client, max_chars, max_tokens

    def _write(self, prompt: str) -> str:
        reply = self.client.with_retries(lambda: self.client.complete(
            [{"role": "user", "content": prompt}], max_tokens=self.max_tokens, temperature=0.7))
        if not reply.strip():
            raise TransientError("empty reply")
        return reply.strip()

    def rephrase(self, doc: Document) -> str:
        style = random.Random(f"style:{doc.id}").choice(STYLES)
        return self._write(REPHRASE.format(style=style, text=doc.text[:self.max_chars]))

    def refusal(self, doc: Document, rng: random.Random) -> str | None:
        asker, helper = rng.choice(ROLE_PAIRS)
        return self._write(REFUSAL.format(asker=asker, helper=helper, text=doc.text[:self.max_chars]))

    def moral(self, doc: Document, rng: random.Random) -> str | None:
        return self._write(MORAL.format(text=self.refusal(doc, rng)))
