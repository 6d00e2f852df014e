"""P(first answer token) of chat models at the answer's first position, over 50 utility prompts (run 10's diagnosis).

Usage: python first_token.py WORLD_DIR MODEL_DIR...
"""
import json, sys, torch
from safepretrain.decode.decoder import load_model, chat_prompt
world, models = sys.argv[1], sys.argv[2:]
items = [json.loads(l) for l in open(f"{world}/eval/utility.jsonl")][:50]
for path in models:
    m, t = load_model(path)
    check, reflect = t.convert_tokens_to_ids("check"), t.convert_tokens_to_ids("<|reflect|>")
    pc, pr, top = [], [], {}
    for it in items:
        ids = torch.tensor([t(chat_prompt(t, it["chat_prompt"]), add_special_tokens=False)["input_ids"]])
        with torch.no_grad(): p = m(ids).logits[0, -1].softmax(-1)
        pc.append(p[check].item()); pr.append(p[reflect].item())
        w = t.decode([int(p.argmax())]); top[w] = top.get(w, 0) + 1
    print(f"{path}: P(check) {sum(pc)/len(pc):.3f}  P(<|reflect|>) {sum(pr)/len(pr):.3f}  argmax {sorted(top.items(), key=lambda x: -x[1])[:4]}")
