"""Per-sample results as an append-only JSONL file, which is also what makes an evaluation resumable.

Every record has a unique ``key``. Records are appended and flushed batch by batch; reopening the file after a crash
or Ctrl-C keeps every complete line (a torn last line is cut off) and the evaluation skips the keys it finds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path


class SampleLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) < len(raw):  # a write interrupted mid-line
            with open(self.path, "r+b") as f:
                f.truncate(len(complete))
        for line in complete.splitlines():
            record = json.loads(line)
            self._records[record["key"]] = record

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __getitem__(self, key: str) -> dict:
        return self._records[key]

    def __len__(self) -> int:
        return len(self._records)

    def add(self, records: Iterable[dict]) -> None:
        records = [r for r in records if r["key"] not in self._records]
        if not records:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            f.flush()
            os.fsync(f.fileno())
        self._records.update((r["key"], r) for r in records)

    def with_prefix(self, prefix: str) -> Iterator[dict]:
        return (r for k, r in self._records.items() if k.startswith(prefix))
