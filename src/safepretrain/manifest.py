"""Run manifests: what produced an output folder, so that it can be reproduced and checked."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from safepretrain.io import sha256_file

TRACKED_PACKAGES = ("safepretrain", "torch", "transformers", "tokenizers", "datatrove", "numpy", "pydantic")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def hardware() -> dict[str, str]:
    """What a trained model's bits depend on besides its inputs: the same data, code and seed train different
    weights where torch picks other kernels (results log, session 19: AVX2 and AVX-512 machines disagree)."""
    import torch

    found = {"machine": platform.machine(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        found["cuda_device"] = torch.cuda.get_device_name(0)
    return found


def file_hashes(root: Path, exclude: tuple[str, ...] = ("manifest.json",)) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative POSIX paths, sorted)."""
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*")) if p.is_file() and p.name not in exclude
    }


def build_manifest(kind: str, config: dict[str, Any], root: Path, **extra: Any) -> dict[str, Any]:
    """A manifest with no timestamps, so that the same inputs give byte-identical manifests."""
    return {
        "kind": kind,
        "config": config,
        **extra,
        "versions": package_versions(),
        "files": file_hashes(root),
    }
