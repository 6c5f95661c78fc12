"""`data=local`: the user's own `.txt`, `.jsonl` and `.parquet` files, or folders of them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from arches.data.sources import CACHE_VERSION, Document, decode_text, sha256_hex
from arches.errors import UserError
from arches.train.run_folder import file_sha256

LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")


class LocalSource:
    """`.txt` files (one document each), `.jsonl` (one per line), `.parquet` (one per row), or folders of them."""

    def __init__(self, paths: Iterable[str] | str, text_field: str = "text"):
        if isinstance(paths, str):
            paths = [paths]
        self.paths = [str(p) for p in paths]
        self.text_field = text_field
        self._files: list[tuple[str, Path]] | None = None

    def files(self) -> list[tuple[str, Path]]:
        """(document name prefix, file), names relative to the given paths so they survive a move."""
        if self._files is not None:
            return self._files
        if not self.paths:
            raise UserError("data=local needs files: set data.paths, e.g. data.paths=[notes.txt,corpus/]")
        found: dict[Path, str] = {}
        for given in self.paths:
            path = Path(given).expanduser()
            if not path.is_absolute():
                path = Path.cwd() / path
            if not path.exists():
                raise UserError(
                    f"data.paths: {given} does not exist (relative paths resolve against {Path.cwd()}); fix the path"
                )
            if path.is_dir():
                candidates = sorted(
                    p for p in path.rglob("*")
                    if p.is_file() and p.suffix.lower() in LOCAL_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )  # fmt: skip
                for file in candidates:
                    found.setdefault(file.resolve(), f"{path.name}/{file.relative_to(path).as_posix()}")
            elif path.suffix.lower() in LOCAL_SUFFIXES:
                found.setdefault(path.resolve(), path.name)
            else:
                raise UserError(
                    f"data.paths: {given} is a '{path.suffix}' file; data=local reads "
                    f"{', '.join(LOCAL_SUFFIXES)} files or folders of them"
                )
        names = list(found.values())
        self._files = [(name if names.count(name) == 1 else str(file), file) for file, name in found.items()]
        return self._files

    def content_hash(self) -> str:
        entries = [(name, file_sha256(file)) for name, file in self.files()]
        return sha256_hex(json.dumps({"local": entries, "text_field": self.text_field, "version": CACHE_VERSION}))

    def documents(self) -> list[Document]:
        return list(self.iter_documents())

    def total_bytes(self) -> int:
        return sum(file.stat().st_size for _, file in self.files())

    def iter_documents(self) -> Iterator[Document]:
        """One file at a time, a .jsonl line by line and a .parquet batch by batch: memory is
        bounded by the largest .txt file (one document), never by the corpus."""
        yielded = False
        for name, file in self.files():
            for document in self.file_documents(name, file):
                yielded = True
                yield document
        if not yielded:
            raise UserError(f"data.paths={self.paths} holds no text; point data.paths at non-empty files")

    def file_documents(self, name: str, file: Path) -> Iterator[Document]:
        """One file's documents with text (blank ones skipped), named `name` or `name:<row>`;
        also the reader of arches.data.engine's tasks."""
        suffix = file.suffix.lower()
        if suffix == ".txt":
            text, replaced = decode_text(file.read_bytes())
            documents: Iterable[Document] = [Document(name, text.removeprefix("\ufeff"), replaced)]
        elif suffix == ".jsonl":
            documents = self._jsonl(name, file)
        else:
            documents = self._parquet(name, file)
        yield from (document for document in documents if document.text.strip())

    def _jsonl(self, name: str, file: Path) -> Iterator[Document]:
        with open(file, "rb") as handle:
            yield from self._jsonl_lines(name, file, handle)

    def _jsonl_lines(self, name: str, file: Path, lines: Iterable[bytes]) -> Iterator[Document]:
        for number, raw in enumerate(_lines(lines), start=1):
            if not raw.strip():
                continue
            line, replaced = decode_text(raw)
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{file}:{number} is not valid JSON ({error.msg}); fix or remove the line") from error
            if not isinstance(record, dict) or self.text_field not in record:
                keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise UserError(
                    f"{file}:{number} has no field '{self.text_field}' (it has: {keys}); "
                    "set data.text_field to the field holding the text"
                )
            text = record[self.text_field]
            if text is None:
                continue
            if not isinstance(text, str):
                raise UserError(f"{file}:{number}: field '{self.text_field}' is a {type(text).__name__}, not text")
            yield Document(f"{name}:{number}", text, replaced)

    def _parquet(self, name: str, file: Path) -> Iterator[Document]:
        import pyarrow.parquet as pq

        columns = pq.read_schema(file).names
        if self.text_field not in columns:
            raise UserError(
                f"{file} has no column '{self.text_field}' (it has: {', '.join(columns)}); "
                "set data.text_field to the column holding the text"
            )
        values = (value for batch in pq.ParquetFile(file).iter_batches(columns=[self.text_field], batch_size=1024)
                  for value in batch.column(0).to_pylist())
        for row, value in enumerate(values):
            if value is None:
                continue
            if isinstance(value, bytes):
                text, replaced = decode_text(value)
            elif isinstance(value, str):
                text, replaced = value, 0
            else:
                raise UserError(f"{file} row {row}: column '{self.text_field}' is not text")
            yield Document(f"{name}:{row}", text, replaced)


def _lines(handle: Iterable[bytes]) -> Iterator[bytes]:
    """A binary file's lines without their b"\n" (numbered as bytes.split(b"\n") numbers them)."""
    for line in handle:
        yield line[:-1] if line.endswith(b"\n") else line
