"""Packed token windows of a prepared corpus for any family: the torch datasets and the DataModule.

Imports torch and lightning (seconds), so only training and the code that feeds a
model import this module; `arches data prepare` never does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

from arches.data.cache import PreparedData
from arches.data.splits import SPLITS
from arches.errors import UserError


def window_doc_ids(doc_starts: np.ndarray, start: int, length: int) -> np.ndarray:
    """Numbers the documents inside a window 0, 0, ..., 1, 1, ... (an <eos> belongs to its document)."""
    positions = np.arange(start, start + length)
    documents = np.searchsorted(doc_starts, positions, side="right") - 1
    return documents - documents[0]


class WindowDataset(Dataset):
    """Non-overlapping `seq_len`-token windows over a flat token array, packed across documents.

    Item i covers tokens [i * seq_len, (i + 1) * seq_len): `{"tokens": (seq_len,) int64,
    "doc_ids": (seq_len,) int64, "index": i}`; a family builds document-boundary masks
    from `doc_ids` and seeds the batch's corruption with the indices.
    """

    def __init__(self, tokens: np.ndarray, doc_starts: np.ndarray, seq_len: int):
        if seq_len < 1:
            raise UserError(f"seq_len={seq_len} must be a positive number of tokens")
        self.tokens, self.doc_starts, self.seq_len = tokens, np.asarray(doc_starts, dtype=np.int64), int(seq_len)

    @classmethod
    def of(cls, prepared: PreparedData, split: str, seq_len: int) -> WindowDataset:
        """One split of a prepared corpus as non-overlapping `seq_len`-token windows."""
        return cls(prepared.tokens(split), prepared.doc_starts(split), seq_len)

    def __len__(self) -> int:
        return len(self.tokens) // self.seq_len

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = index * self.seq_len
        tokens = np.asarray(self.tokens[start : start + self.seq_len], dtype=np.int64)
        doc_ids = window_doc_ids(self.doc_starts, start, self.seq_len)
        # `index` seeds the batch's corruption (arches.families.noise.batch_rng)
        return {"tokens": torch.from_numpy(tokens), "doc_ids": torch.from_numpy(doc_ids), "index": int(index)}

    def __getstate__(self) -> dict:
        # a memmap pickles as a full copy; spawned DataLoader workers reopen the file instead
        state = dict(self.__dict__)
        if isinstance(self.tokens, np.memmap) and self.tokens.filename:
            state["tokens"] = ("memmap", self.tokens.filename, self.tokens.dtype.str, len(self.tokens))
        return state

    def __setstate__(self, state: dict) -> None:
        tokens = state["tokens"]
        if isinstance(tokens, tuple) and tokens[0] == "memmap":
            state["tokens"] = np.memmap(tokens[1], dtype=np.dtype(tokens[2]), mode="r", shape=(tokens[3],))
        self.__dict__.update(state)


class WindowOrder(Sampler):
    """Training window order as a pure function of (seed, epoch), resumable mid-epoch.

    Epoch e visits the windows in `default_rng([seed, e]).permutation(n)`; under
    DDP each rank takes every world-th of them (equal counts). `resume(epoch,
    batches)` makes the next pass over that epoch start after its first `batches`
    batches, so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, num_windows: int, seed: int, batch_size: int):
        self.num_windows, self.seed, self.batch_size = int(num_windows), int(seed), int(batch_size)
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    @staticmethod
    def _rank() -> tuple[int, int]:
        distributed = torch.distributed
        if distributed.is_available() and distributed.is_initialized():
            return distributed.get_rank(), distributed.get_world_size()
        return 0, 1

    def set_epoch(self, epoch: int) -> None:  # called by Lightning before each epoch
        self.epoch = int(epoch)

    def resume(self, epoch: int, batches: int) -> None:
        self.epoch, self._resume = int(epoch), (int(epoch), int(batches))

    def order(self, epoch: int) -> np.ndarray:
        rank, world = self._rank()
        permutation = np.random.default_rng([self.seed % 2**63, int(epoch)]).permutation(self.num_windows)
        return permutation[rank::world][: self.num_windows // world]

    def skipped_batches(self) -> int:
        """Batches the next pass skips: those a resumed run trained before it stopped."""
        if self._resume is not None and self._resume[0] == self.epoch:
            return self._resume[1]
        return 0

    def __iter__(self) -> Iterator[int]:
        skip = self.skipped_batches()
        self._resume = None  # once: the next epoch starts from its beginning
        yield from self.order(self.epoch)[skip * self.batch_size :].tolist()

    def __len__(self) -> int:
        return self.num_windows // self._rank()[1]


class ResumableLoader(DataLoader):
    """A DataLoader whose position is saved in Lightning's checkpoint and restored on
    resume (Lightning's `state_dict` / `load_state_dict` protocol for dataloaders):
    the epoch and how many batches of it training has taken. Lightning does not
    prefetch from a loader with a length, so batches handed out = batches trained."""

    def __iter__(self):
        sampler: WindowOrder = self.sampler
        self._position = [sampler.epoch, sampler.skipped_batches()]
        for batch in super().__iter__():
            self._position[1] += 1
            yield batch

    def state_dict(self) -> dict:
        position = getattr(self, "_position", None) or [self.sampler.epoch, 0]
        return {"epoch": int(position[0]), "batches": int(position[1]), "seed": self.sampler.seed}

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("seed", self.sampler.seed)) != self.sampler.seed:
            raise UserError(
                f"the checkpoint's data order was seeded with {state['seed']}, this run with "
                f"{self.sampler.seed}; resume with the same seed, or resume=never"
            )
        self.sampler.resume(int(state["epoch"]), int(state["batches"]))


class ArchesDataModule(lightning.LightningDataModule):
    """Packed windows of one prepared corpus for any family; the family's objective is `collate_fn`.

    Training windows come in `WindowOrder`: a pure function of (seed, epoch), so every
    architecture run with the same seed sees the same windows in the same order,
    whatever its collator, and a resumed run continues where it stopped.
    Validation and test windows are in order.
    """

    def __init__(
        self,
        prepared: PreparedData,
        seq_len: int,
        micro_batch_size: int,
        collate_fn: Callable[[list[dict]], dict] | None = None,
        seed: int = 0,
        num_workers: int = 0,
        eval_windows: int | None = None,
        val_collate_fn: Callable[[list[dict]], dict] | None = None,
    ):
        super().__init__()
        self.prepared, self.seq_len, self.micro_batch_size = prepared, int(seq_len), int(micro_batch_size)
        self.collate_fn = collate_fn or default_collate
        # held-out batches may want a fixed corruption (the same masks at every validation)
        self.val_collate_fn = val_collate_fn or self.collate_fn
        self.seed, self.num_workers, self.eval_windows = int(seed), int(num_workers), eval_windows
        self._datasets: dict[str, WindowDataset] = {}

    def dataset(self, split: str) -> WindowDataset:
        if split not in self._datasets:
            self._datasets[split] = WindowDataset.of(self.prepared, split, self.seq_len)
        return self._datasets[split]

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            self.dataset(split)

    def _loader(self, dataset, collate_fn=None, loader_class=DataLoader, **kwargs) -> DataLoader:
        return loader_class(
            dataset,
            batch_size=self.micro_batch_size,
            collate_fn=collate_fn or self.collate_fn,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            # its own generator (worker seeds): creating an iterator leaves the global RNG alone
            generator=torch.Generator().manual_seed(self.seed),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        if len(dataset) < self.micro_batch_size:
            raise UserError(
                f"the train split holds {len(dataset)} windows of {self.seq_len} tokens, fewer than one "
                f"micro batch of {self.micro_batch_size}; lower data.seq_len or the batch size, or add text"
            )
        sampler = WindowOrder(len(dataset), self.seed, self.micro_batch_size)
        return self._loader(dataset, loader_class=ResumableLoader, sampler=sampler, drop_last=True)

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        if self.eval_windows is not None:
            dataset = Subset(dataset, range(min(int(self.eval_windows), len(dataset))))
        return self._loader(dataset, collate_fn=self.val_collate_fn, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
