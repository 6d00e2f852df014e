"""Export what a finished experiment measured, without its models or samples: a folder small enough to publish.

    DEST/results.md, results.csv, results.json, paired.md, *.png, report.html   the aggregated results
    DEST/experiment.json                                                       the config it ran with
    DEST/worlds/seed0-manifest.json                                            each world's files, hashed
    DEST/cells/<recipe>-start<s>-seed0-manifest.json                           each cell's data and models, hashed

The manifests pin what produced every number (world files, pretraining data and models by sha256, package
versions, hardware), so a reader can check a rebuild against them. This repository's ``docs/results`` folders are
such exports.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from safepretrain.errors import UserError
from safepretrain.experiment.config import load_saved
from safepretrain.experiment.run import grid
from safepretrain.experiment.stages import Layout
from safepretrain.io import atomic_directory


def export_results(root: Path, dest: Path, overwrite: bool = False) -> list[Path]:
    """Copy ``root``'s results, config and manifests to ``dest`` (written whole or not at all); returns the files."""
    cfg = load_saved(root)
    layout = Layout(cfg)
    results = root / "results"
    if not (results / "results.md").is_file():
        raise UserError(f"{root} has no results yet: its grid is not finished (`safepretrain experiment status "
                        f"{root}` says how far it is; run it again to finish)")
    copies = {path: Path(path.name) for path in sorted(results.iterdir()) if path.is_file()}
    copies[root / "experiment.json"] = Path("experiment.json")
    copies |= {layout.world(s) / "manifest.json": Path("worlds", f"seed{s}-manifest.json") for s in cfg.seeds}
    for cell in grid(cfg):
        name = f"{cell.recipe}-start{cell.start:g}-seed{cell.seed}-manifest.json"
        copies[layout.cell(cell) / "manifest.json"] = Path("cells", name)
    if missing := [str(src) for src in copies if not src.is_file()]:
        raise UserError(f"{root}: {len(missing)} manifests are missing ({missing[0]}, ...): run the experiment "
                        "again to finish it; it writes every manifest before its results")
    with atomic_directory(dest, overwrite) as tmp:
        for src, name in copies.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / name)
    return [dest / name for name in copies.values()]
