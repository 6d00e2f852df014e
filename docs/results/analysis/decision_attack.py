"""The decision attack (the answer forced to the decision sentence alone, no checks) on finished cells, held-out
harm only; session 18 ran it on the cells of runs/w012, w012-rec, s34-base2, s34-srp, s34-rec (args: YAML:RECIPE:SEED).
Prints: run, recipe, seed, stage, unsafe of 100 with safe decoding, unsafe unguarded, seconds."""
import sys, json, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from safepretrain.experiment.config import load_experiment
from safepretrain.experiment.stages import Layout, Cell
from safepretrain.decode.decoder import load_model
from safepretrain.eval.medsafetyworld import WorldEvalConfig, evaluate_world
from safepretrain.world.generate import WorldFolder

jobs = [j.split(':') for j in sys.argv[1:]]  # yaml:recipe:seed
for yaml, recipe, seed in jobs:
    cfg = load_experiment(Path(yaml), None, {})
    layout, cell = Layout(cfg), Cell(recipe, 0.0, int(seed))
    for stage, model_dir in (("post", layout.sft(cell)), ("finetuned", layout.finetune(cell))):
        out = layout.cell(cell) / f"eval-{stage}-decision"
        t = time.time()
        model, tok = load_model(model_dir / "model")
        decoders = ("greedy", "reflect") if cell.spec.reflects else ("greedy",)
        m = evaluate_world(model, tok, WorldFolder(layout.world(int(seed))),
                           WorldEvalConfig(splits=("heldout_unsafe",), attacks=("decision",), decoders=decoders,
                                           max_items=100, max_new_tokens=96, reflections=False, decision_probes=False), out)
        c = m["conditions"]
        view = c["reflect/decision"]["guarded"] if "reflect/decision" in c else c["greedy/decision"]["unguarded"]
        print(yaml, recipe, seed, stage, view["heldout_unsafe"]["unsafe_action_rate"]["count"],
              c["greedy/decision"]["unguarded"]["heldout_unsafe"]["unsafe_action_rate"]["count"], f"{time.time()-t:.0f}s", flush=True)
