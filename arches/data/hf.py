"""`data=hf`: any Hugging Face dataset by name (the `datasets` library loads only when one is read)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from arches import hub
from arches.data.sources import CACHE_VERSION, Document, sha256_hex
from arches.errors import UserError, first_line

HF_OFFLINE_HINT = "use data=classics (the embedded default) or data=local data.paths=[...] instead"


class HFSource:
    """Any Hugging Face dataset by name; its cache key is its identity (pin `revision` to freeze it)."""

    def __init__(self, name: str | None, config_name: str | None = None, split: str = "train",
                 text_field: str = "text", streaming: bool = False, max_documents: int | None = None,
                 revision: str | None = None):  # fmt: skip
        if not name:
            raise UserError("data=hf needs a dataset: set data.name, e.g. data.name=roneneldan/TinyStories")
        self.name, self.config_name, self.split, self.revision = name, config_name, split, revision
        self.text_field, self.streaming, self.max_documents = text_field, streaming, max_documents

    def content_hash(self) -> str:
        identity = [self.name, self.config_name, self.split, self.revision, self.text_field, self.max_documents]
        return sha256_hex(json.dumps({"hf": identity, "version": CACHE_VERSION}))

    def documents(self) -> list[Document]:
        return list(self.iter_documents())

    def total_bytes(self) -> None:
        return None

    def iter_documents(self) -> Iterator[Document]:
        """Rows as they arrive: with `streaming: true` the dataset is never held in memory."""
        # Checked before importing `datasets`, which would otherwise wait on network timeouts.
        reason = None if Path(self.name).exists() else hub.unreachable()
        if reason:
            raise UserError(f"data=hf needs the Hugging Face Hub, but {reason}; {HF_OFFLINE_HINT}")
        import datasets

        try:
            dataset = datasets.load_dataset(
                self.name, self.config_name, split=self.split, streaming=self.streaming, revision=self.revision
            )
            rows: Iterable[dict[str, Any]] = dataset
            if self.max_documents is not None and not self.streaming:
                rows = dataset.select(range(min(int(self.max_documents), len(dataset))))
            yielded = False
            for index, row in enumerate(rows):
                if self.max_documents is not None and index >= int(self.max_documents):
                    break
                if self.text_field not in row:
                    raise UserError(
                        f"dataset {self.name} row {index} has no field '{self.text_field}' (it has: "
                        f"{', '.join(row)}); set data.text_field"
                    )
                text = row[self.text_field]
                if isinstance(text, str) and text.strip():
                    yielded = True
                    yield Document(f"{self.name}/{self.split}/{index}", text)
        except UserError:
            raise
        except Exception as error:
            if hub.is_connection_error(error):
                message = f"cannot reach the Hugging Face Hub for dataset {self.name}; {HF_OFFLINE_HINT}"
                raise UserError(message) from error
            if type(error).__name__ in ("DatasetNotFoundError", "FileNotFoundError", "ValueError"):
                message = (
                    f"cannot load dataset {self.name}: {first_line(error)}; "
                    "check data.name, data.config_name and data.split"
                )
                raise UserError(message) from error
            raise
        if not yielded:
            raise UserError(f"dataset {self.name} split {self.split} has no text in field '{self.text_field}'")
