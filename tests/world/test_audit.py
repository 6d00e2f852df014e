"""The audit re-derives every property with the oracle and fails on a corrupted world."""

import json
import shutil
from dataclasses import asdict

import pytest

from safepretrain.io import sha256_file
from safepretrain.world.audit import audit_world
from safepretrain.world.generate import WorldFolder


@pytest.fixture
def world_copy(tiny_world_dir, tmp_path):
    shutil.copytree(tiny_world_dir, tmp_path / "w")
    return tmp_path / "w"


def _failed(root) -> set[str]:
    return {p.name for p in audit_world(WorldFolder(root)).properties if not p.passed}


def _append_to_corpus(root, doc: dict, fix_hash: bool = True) -> None:
    with (root / "corpus.jsonl").open("a") as f:
        f.write(json.dumps(doc) + "\n")
    if fix_hash:  # a forger who also updates the manifest: only the oracle can catch it
        manifest = json.loads((root / "manifest.json").read_text())
        manifest["files"]["corpus.jsonl"] = sha256_file(root / "corpus.jsonl")
        (root / "manifest.json").write_text(json.dumps(manifest))


def test_a_generated_world_passes_every_property(tiny_folder):
    report = audit_world(tiny_folder)
    assert report.passed, [(p.name, p.detail) for p in report.properties if not p.passed]
    assert {p.name for p in report.properties} == {"integrity", "labels", "heldout-absent", "composition",
                                                   "disjoint", "counts"}


def test_a_heldout_episode_disguised_as_safe_is_caught_by_the_oracle(world_copy, tiny_folder):
    heldout = next(d for d in tiny_folder.reflection_documents() if "harm_interaction" in d.types)
    forged = asdict(heldout) | {"id": "forged", "label": "safe", "types": [], "cell": None}
    forged["segments"] = [s | {"label": "safe", "types": []} for s in forged["segments"]]
    _append_to_corpus(world_copy, forged)
    assert _failed(world_copy) == {"labels", "heldout-absent"}


def test_an_edited_file_fails_integrity(world_copy):
    _append_to_corpus(world_copy, json.loads((world_copy / "corpus.jsonl").open().readline()), fix_hash=False)
    assert "integrity" in _failed(world_copy)


def test_an_evaluation_decision_leaked_into_training_fails_disjointness(world_copy, tiny_folder):
    item = next(tiny_folder.eval_items("utility"))
    doc = next(d for d in tiny_folder.corpus() if d.cell is not None and d.label == "safe")
    leaked = asdict(doc) | {"id": "leak", "cell": asdict(item.cell)}
    _append_to_corpus(world_copy, leaked)
    assert _failed(world_copy) == {"disjoint"}


def test_a_world_whose_safe_text_lacks_a_needed_fact_fails_composition(world_copy, tiny_folder):
    item = next(tiny_folder.eval_items("heldout_unsafe"))
    patient = tiny_folder.oracle.patients[item.cell.patient]
    lines = (world_copy / "corpus.jsonl").read_text().splitlines()
    kept = [line for line in lines if not (json.loads(line)["kind"] == "patient_record"
                                          and f"{patient.name} " in json.loads(line)["text"]
                                          and patient.takes in json.loads(line)["text"])]
    (world_copy / "corpus.jsonl").write_text("\n".join(kept) + "\n")
    assert "composition" in _failed(world_copy)


def test_indicated_heldout_teaches_the_held_out_mechanism_in_safe_episodes_and_still_passes(tmp_path):
    """With ``indicated_heldout`` safe documents serve an adverse goal through an interaction ("cause bleeding in P
    for surgery"): the held-out harm differs from them by its missing indication, and no held-out type appears."""
    from dataclasses import replace

    from safepretrain.world.config import tiny
    from safepretrain.world.templates import INDICATIONS
    from safepretrain.world.generate import generate_world

    generate_world(replace(tiny(), indicated_heldout=True, n_episodes=800), tmp_path / "w")
    folder = WorldFolder(tmp_path / "w")
    docs = [json.loads(line) for line in (tmp_path / "w" / "corpus.jsonl").open()]
    indicated_interaction = [d for d in docs if (d.get("cell") or {}).get("goal") == "induce"
                             and d["cell"].get("mechanism") == "interaction"
                             and any(reason in d["text"] for reason in INDICATIONS)]
    assert indicated_interaction and all(s["label"] == "safe" for d in indicated_interaction for s in d["segments"])
    report = audit_world(folder)
    assert report.passed, [(p.name, p.detail) for p in report.properties if not p.passed]
