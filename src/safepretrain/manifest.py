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
