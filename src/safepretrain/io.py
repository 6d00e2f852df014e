"""Reading and writing files safely: atomic writes, validated JSONL, content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from safepretrain.errors import UserError

T = TypeVar("T")


def dumps(record: Any) -> str:
    """One JSON line; stable key order and separators so equal records give equal bytes."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def write_jsonl(path: Path, records: Iterable[Any]) -> int:
    """Write records to ``path`` atomically (temp file + rename); returns how many were written."""
    count = 0
    with atomic_open(path) as f:
        for record in records:
            f.write(dumps(record) + "\n")
            count += 1
    return count


def write_json(path: Path, obj: Any) -> None:
    with atomic_open(path) as f:
        f.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[Any]:
    """A text file that appears at ``path`` only once it is completely written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(out: Path, overwrite: bool) -> Iterator[Path]:
    """Build a directory under a temporary name next to ``out``; it becomes ``out`` only if the block succeeds.

    An interrupted build leaves at most a ``.<name>.partial-*`` folder, never a half-written ``out``.
    """
    out = Path(out)
    check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty or unwritable output folder (unless ``overwrite``) before any work starts."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output folder {out} is not empty; choose another --out or pass --overwrite")
    parent = out.parent if not out.exists() else out
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write to {parent} (permission denied); choose another --out")


def read_jsonl(path: Path, parse: Any = None) -> Iterator[Any]:
    """Yield the records of a JSONL file, each passed through ``parse`` (e.g. a pydantic TypeAdapter's
    ``validate_python``). A bad line raises UserError naming the file and line."""
    for _, record in read_jsonl_numbered(path, parse):
        yield record


def read_jsonl_numbered(path: Path, parse: Any = None) -> Iterator[tuple[int, Any]]:
    """As read_jsonl, yielding (line number, record)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}, line {number}: not valid JSON ({e.msg} at column {e.colno})") from None
            if parse is None:
                yield number, record
                continue
            try:
                yield number, parse(record)
            except ValueError as e:  # pydantic.ValidationError is a ValueError
                raise UserError(f"{path}, line {number}: {_first_error(e)}") from None


def _first_error(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "record"
        return f"field {where!r}: {first.get('msg')}"
    return str(error)


def reservoir_sample(items: Iterable[T], k: int, rng: random.Random) -> list[T]:
    """A uniform sample of ``k`` items (all of them if fewer) from a stream read once: a corpus need not fit in
    memory to be sampled."""
    sample: list[T] = []
    for seen, item in enumerate(items):
        if len(sample) < k:
            sample.append(item)
        elif (j := rng.randrange(seen + 1)) < k:
            sample[j] = item
    return sample


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_yaml_mapping(path: Path, what: str = "config") -> dict[str, Any]:
    """A YAML file whose top level is a mapping; a clear error (which file, what is wrong) otherwise."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such {what} file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({e})".replace("\n", " ")) from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of {what} fields at the top level")
    return values
