"""Reading and writing corpora as datatrove pipelines: JSONL (plain, gzip, zstd) and Parquet, sharded by task.

Readers apply one policy to bad input -- ``on_error="raise"`` (default: stop with the file and line) or ``"skip"``
(count it in the step's stats and go on): malformed JSON, a missing or non-string text field, an empty text, bytes
that are not UTF-8, a document over ``max_doc_bytes``. A single big file is still shared by all tasks: when there
are fewer files than tasks, each task reads every ``world_size``-th line of every file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

from datatrove.data import Document
from datatrove.pipeline.readers import JsonlReader, ParquetReader
from datatrove.pipeline.writers import JsonlWriter, ParquetWriter

from safepretrain.errors import UserError

OnError = Literal["raise", "skip"]
MAX_DOC_BYTES = 10 * 1024 * 1024
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd", ".json.gz")


class CheckedJsonlReader(JsonlReader):
    """datatrove's JSONL reader with explicit errors instead of warnings, and line sharding of few big files."""

    name = "checked jsonl"

    def __init__(self, data_folder: str, glob_pattern: str | None = None, text_key: str = "text",
                 on_error: OnError = "raise", max_doc_bytes: int = MAX_DOC_BYTES, **kwargs):
        super().__init__(data_folder, glob_pattern=glob_pattern, text_key=text_key, add_file_path=False, **kwargs)
        self.on_error, self.max_doc_bytes = on_error, max_doc_bytes
        self._line_shard: tuple[int, int] | None = None

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        files = self.data_folder.list_files(recursive=self.recursive, glob_pattern=self.glob_pattern)
        if not files:
            raise UserError(f"{self.data_folder.path}: no input files match {self.glob_pattern or '*'}")
        if len(files) >= world_size:
            yield from super().run(data, rank, world_size)
            return
        self._line_shard = (rank, world_size)  # fewer files than tasks: every task reads a slice of each file
        for path in files:
            self.stat_update("input_files")
            for document in self.read_file(path):
                self.update_doc_stats(document)
                self.stat_update("documents")
                yield document

    def read_file(self, filepath: str):
        import orjson

        with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
            lines = f if hasattr(f, "readline") and not _is_zstd(f) else io.BufferedReader(f)  # zstd reader: no lines
            for number, raw in enumerate(lines, 1):
                if self._line_shard and (number - 1) % self._line_shard[1] != self._line_shard[0]:
                    continue
                if not raw.strip():
                    continue
                with self.track_time():
                    where = f"{self.data_folder.path}/{filepath}, line {number}"
                    document = self._parse(raw, where, number, orjson)
                if document is not None:
                    yield document

    def _parse(self, raw: bytes, where: str, number: int, orjson) -> Document | None:
        if len(raw) > self.max_doc_bytes:
            return self._reject("too_large", f"{where}: record of {len(raw):,} bytes is over the "
                                             f"{self.max_doc_bytes:,}-byte limit (max_doc_bytes)")
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            kind = "not_utf8" if "utf-8" in str(e).lower() else "bad_json"
            return self._reject(kind, f"{where}: not valid {'UTF-8' if kind == 'not_utf8' else 'JSON'} ({e})")
        if not isinstance(record, dict) or not isinstance(record.get(self.text_key), str):
            return self._reject("no_text", f"{where}: no {self.text_key!r} string field")
        if not record[self.text_key].strip():
            return self._reject("empty", f"{where}: empty {self.text_key!r}")
        record.setdefault(self.id_key, f"{Path(where.split(',')[0]).name}:{number}")
        return self.get_document_from_dict(record, where, number)

    def _reject(self, kind: str, message: str) -> None:
        if self.on_error == "raise":
            raise UserError(message + "; fix the record or pass --on-error skip to count and skip such records")
        self.stat_update(f"skipped_{kind}")
        return None


def _is_zstd(f) -> bool:
    return type(f).__module__.startswith("zstandard")


def reader(path: str | Path, text_key: str = "text", on_error: OnError = "raise",
           max_doc_bytes: int = MAX_DOC_BYTES):
    """A reader for a file or a folder of shards (JSONL in any compression, or Parquet)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    folder, pattern = (str(path.parent), path.name) if path.is_file() else (str(path), None)
    parquet = path.suffix == ".parquet" or (path.is_dir() and any(path.rglob("*.parquet")))
    if parquet:
        return ParquetReader(folder, glob_pattern=pattern or "**/*.parquet", text_key=text_key)
    if path.is_dir():
        pattern = "**/*.jsonl*"
    return CheckedJsonlReader(folder, glob_pattern=pattern, text_key=text_key, on_error=on_error,
                              max_doc_bytes=max_doc_bytes)


def writer(out: str | Path, fmt: Literal["jsonl", "parquet"] = "jsonl", compression: str | None = None):
    """One shard per task (``00000.jsonl``...), metadata flattened back to top-level fields as in the input."""
    if fmt == "parquet":
        return ParquetWriter(str(out), output_filename="${rank}.parquet", compression=compression or "snappy",
                             expand_metadata=True)
    suffix = {None: "", "gzip": ".gz", "zstd": ".zst"}[compression]
    return JsonlWriter(str(out), output_filename="${rank}.jsonl" + suffix, compression=compression,
                       expand_metadata=True)


def mark_changed(doc: Document, step: str, stale: tuple[str, ...] = ("segments",)) -> None:
    """Record that ``step`` rewrote the text and drop input fields that no longer describe it (character offsets;
    after a rewrite also the input's own labels)."""
    for name in stale:
        doc.metadata.pop(name, None)
    doc.metadata["interventions"] = [*doc.metadata.get("interventions", []), step]


def shard_files(out: str | Path) -> list[Path]:
    """The output shards of a finished pipeline, in task order."""
    out = Path(out)
    return sorted(p for p in out.iterdir() if p.is_file() and (p.name.endswith(JSONL_SUFFIXES) or
                                                               p.suffix == ".parquet"))
