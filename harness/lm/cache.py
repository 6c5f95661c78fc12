"""Where `ArchesLM` keeps finished results: `<run>/eval/cache.sqlite`, keyed by the checkpoint's
content hash *and* the request, so a re-run or a resumed evaluation is fast and one model's
scores are never served to another (lm-eval's own `--use_cache` keys on the request alone:
lm-eval issue #4063)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arches.train.run_folder import CHECKPOINT_DIR, MODEL_FILE, WEIGHTS_FILE

CACHE_FILE = Path("eval") / "cache.sqlite"


def checkpoint_sha256(run_dir: Path) -> str:
    """sha256 over the checkpoint's model.json and model.safetensors: its content, not its path."""
    digest = hashlib.sha256()
    for name in (MODEL_FILE, WEIGHTS_FILE):
        with open(Path(run_dir) / CHECKPOINT_DIR / name, "rb") as handle:
            digest.update(name.encode() + b"\0")
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class RequestCache:
    """Finished results in a small SQLite table, keyed by (checkpoint sha256, request key)."""

    def __init__(self, path: Path, checkpoint: str) -> None:
        self.path = Path(path)
        self.checkpoint = checkpoint
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(self.path, timeout=60)
        with self.connection:
            self.connection.execute(
                "CREATE TABLE IF NOT EXISTS results (checkpoint TEXT NOT NULL, request TEXT NOT NULL, "
                "kind TEXT NOT NULL, result TEXT NOT NULL, PRIMARY KEY (checkpoint, request))"
            )

    def get(self, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            rows = self.connection.execute(
                f"SELECT request, result FROM results WHERE checkpoint = ? AND request IN ({','.join('?' * len(chunk))})",
                [self.checkpoint, *chunk],
            )
            found.update((request, json.loads(result)) for request, result in rows)
        return found

    def put(self, kind: str, items: Sequence[tuple[str, Any]]) -> None:
        with self.connection:
            self.connection.executemany(
                "INSERT OR REPLACE INTO results (checkpoint, request, kind, result) VALUES (?, ?, ?, ?)",
                [(self.checkpoint, key, kind, json.dumps(result)) for key, result in items],
            )

    def __len__(self) -> int:
        return self.connection.execute("SELECT COUNT(*) FROM results WHERE checkpoint = ?", [self.checkpoint]).fetchone()[0]
