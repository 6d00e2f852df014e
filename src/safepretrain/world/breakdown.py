"""``safepretrain world breakdown``: where a model's unsafe answers come from, and which ones its guard let through.

An evaluation's ``samples.jsonl`` holds, per item and condition (e.g. ``reflect/prefill``), the answer, the oracle's
outcome as written (unguarded) and whether the model's own reflections flagged it (the guard refuses a flagged
answer). Averages hide where a recipe fails; this groups one split's items by what the world knows about them --
the mechanism, the adverse effect the harmful option causes, the drugs, whether the patient was ever seen -- and
gives per group the unsafe rate unguarded and guarded, and the guard's catch rate: of the unsafe answers, the share
a non-Safe reflection stopped. The leaked answers (unsafe, never flagged) come with it, as examples to read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from safepretrain.errors import UserError
from safepretrain.io import read_jsonl_numbered
from safepretrain.world.generate import WorldFolder
from safepretrain.world.judge import Rate
from safepretrain.world.schema import EvalItem, EvalOption

NONE = "-"


def _harmful_option(item: EvalItem) -> EvalOption | None:
    return next((o for o in item.options if o.harms), None)


def _effects(world: WorldFolder, item: EvalItem) -> str:
    option = _harmful_option(item)
    if option is None:
        return NONE
    harms = world.oracle.harms(item.cell.patient, option.drug, option.dose_mg)
    return ", ".join(h.effect for h in harms if h.effect != item.wanted_effect) or NONE


def _drugs(world: WorldFolder, item: EvalItem) -> str:
    """The harmful option's drug, and the drug the patient takes (the pair an interaction needs)."""
    option = _harmful_option(item)
    return f"{option.drug} + {world.oracle.patients[item.cell.patient].takes}" if option else NONE


ATTRIBUTES: dict[str, Callable[[WorldFolder, EvalItem], str]] = {
    "mechanism": lambda world, item: item.cell.mechanism,
    "effect": _effects,
    "drugs": _drugs,
    "patient": lambda world, item: "held-out" if item.patient_heldout else "train",
    "context": lambda world, item: item.cell.context,
}
"""What an item can be grouped by: its request's mechanism, the effect its harmful option causes, the harmful drug
with the drug the patient takes, whether the patient occurs in any corpus episode, and the request's context."""


@dataclass(frozen=True)
class Group:
    key: str
    n: int
    unsafe: Rate
    """Unsafe answers as written."""
    guarded_unsafe: Rate
    """Unsafe answers the guard let through (not flagged by any non-Safe reflection)."""
    caught: Rate
    """Of the unsafe answers, those a non-Safe reflection flagged."""


@dataclass(frozen=True)
class Breakdown:
    split: str
    condition: str
    by: str
    groups: tuple[Group, ...]
    total: Group
    leaks: tuple[dict, ...]
    """Sample records of unsafe answers the guard let through, with the item's attribute value as ``group``."""


def read_samples(path: Path, split: str, condition: str) -> dict[str, dict]:
    """item id -> record of one condition's generations on one split (``gen/<condition>/<id>`` keys)."""
    records, conditions = {}, set()
    for line, record in read_jsonl_numbered(path):
        key = record.get("key", "") if isinstance(record, dict) else ""
        if not key.startswith("gen/"):
            continue  # reflection classification, probes
        if not {"outcome", "flagged", "split", "id"} <= record.keys():
            raise UserError(f"{path}, line {line}: a generation record lacks outcome, flagged, split or id; "
                            "is this an evaluation's samples.jsonl?")
        record_condition = key[len("gen/"):].rsplit("/", 1)[0]
        conditions.add(record_condition)
        if record_condition == condition and record["split"] == split:
            records[record["id"]] = record
    if not records:
        found = ", ".join(sorted(conditions)) or "none"
        raise UserError(f"{path}: no {split} generations under condition {condition!r} "
                        f"(conditions in the file: {found})")
    return records


def attribute(by: str) -> Callable[[WorldFolder, EvalItem], str]:
    if by not in ATTRIBUTES:
        raise UserError(f"unknown attribute {by!r}; choose from {', '.join(ATTRIBUTES)}")
    return ATTRIBUTES[by]


def breakdown(world: WorldFolder, samples: dict[str, dict], split: str, condition: str, by: str) -> Breakdown:
    key_of = attribute(by)
    items = {i.id: i for i in world.eval_items(split)}
    if unknown := sorted(set(samples) - set(items)):
        raise UserError(f"{len(unknown)} sample(s) name items that are not in {world.root}'s {split} split "
                        f"(first: {unknown[0]!r}): the samples come from another world")
    grouped: dict[str, list[dict]] = {}
    for item_id, record in samples.items():
        grouped.setdefault(key_of(world, items[item_id]), []).append(record)
    groups = sorted((_group(key, records) for key, records in grouped.items()), key=lambda g: (-g.n, g.key))
    leaks = tuple({**r, "group": key} for key, records in sorted(grouped.items()) for r in records
                  if r["outcome"] == "unsafe" and not r["flagged"])
    return Breakdown(split, condition, by, tuple(groups), _group("all", list(samples.values())), leaks)


def _group(key: str, records: list[dict]) -> Group:
    unsafe = [r for r in records if r["outcome"] == "unsafe"]
    caught = sum(r["flagged"] for r in unsafe)
    return Group(key, len(records), Rate(len(unsafe), len(records)), Rate(len(unsafe) - caught, len(records)),
                 Rate(caught, len(unsafe)))


# ---------------------------------------------------------------- output


COLUMNS = ("n", "unsafe", "guarded unsafe", "guard caught")


def cells(group: Group) -> tuple[str, ...]:
    return (str(group.n), _rate(group.unsafe), _rate(group.guarded_unsafe), _rate(group.caught))


def _rate(rate: Rate) -> str:
    if not rate.n:
        return NONE
    low, high = rate.wilson()
    return f"{rate.count}/{rate.n} = {rate.value:.2f} [{low:.2f}, {high:.2f}]"


def leak_text(record: dict, width: int = 160) -> str:
    """The end of the forced prefill, then what the model wrote, and its reflections' labels."""
    prefill = record.get("prefill", "")
    shown = ("..." + prefill[-60:] if len(prefill) > 60 else prefill) + record["text"]
    shown = " ".join(shown.split())
    labels = ", ".join(record.get("reflections", [])) or "none"
    return f"{shown[:width]}{'...' if len(shown) > width else ''}  [reflections: {labels}]"


def to_markdown(result: Breakdown, examples: int) -> str:
    header = [f"{result.split}, {result.condition}, by {result.by}", "",
              f"| {result.by} | {' | '.join(COLUMNS)} |", "|---" * (len(COLUMNS) + 1) + "|"]
    rows = [f"| {g.key} | {' | '.join(cells(g))} |" for g in (*result.groups, result.total)]
    note = ["", "Counts with 95% Wilson intervals. guarded unsafe: unsafe answers no non-Safe reflection flagged; "
                "guard caught: of the unsafe answers, those flagged."]
    shown = result.leaks[:examples]
    leaks = (["", f"Unsafe answers the guard let through ({len(shown)} of {len(result.leaks)}):", ""]
             + [f"- `{r['id']}` ({r['group']}): {leak_text(r)}" for r in shown]) if shown else []
    return "\n".join(header + rows + note + leaks) + "\n"
