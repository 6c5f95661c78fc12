"""What every corpus source gives: documents with unique names, and a content hash for the cache key.

The sources themselves are `classics` (the embedded default), `local` and `hf`;
`arches.data.cache.build_source` picks one by `data.source`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

# Bump when the extraction, splitting or tokenization changes what a cache entry holds.
# Here, not in arches.data.cache, because every source's content hash includes it.
CACHE_VERSION = 1


@dataclass
class Document:
    name: str
    text: str
    # bytes that were not valid UTF-8, each replaced by U+FFFD
    replaced_bytes: int = 0


class CorpusSource(Protocol):
    def content_hash(self) -> str:
        """Identifies the corpus; cheap where possible, so a cache hit reads no text."""

    def documents(self) -> list[Document]:
        """Every document, in a fixed order, with unique names."""

    def iter_documents(self) -> Iterator[Document]:
        """The same documents in the same order, read as they are consumed (arches.data.stream)."""

    def total_bytes(self) -> int | None:
        """The input's size where it is known without reading it (a progress bar's total), else None."""


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def decode_text(data: bytes) -> tuple[str, int]:
    """UTF-8 text and the number of invalid bytes, each replaced by U+FFFD (never fatal)."""
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        # surrogateescape maps each invalid byte to one lone surrogate, so they can be counted exactly
        escaped = data.decode("utf-8", errors="surrogateescape")
        text, replaced = _ESCAPED_BYTE.subn("\ufffd", escaped)
        return text, replaced
