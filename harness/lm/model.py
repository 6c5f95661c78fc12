"""`ArchesLM`: the one lm-eval model, registered as `arches`, over any family's scorer.

It rebuilds a run's model from the checkpoint's own config (never the command
line), checks that the run folder's tokenizer is the one the model was trained
with, sorts requests longest first, batches them, and hands each batch to the
family's `SPEC.scorer` (arches/families/scoring.py). Results are cached in
`<run>/eval/cache.sqlite`, keyed by the checkpoint's content hash *and* the request,
so a re-run or a resumed evaluation is fast and one model's scores are never served
to another (lm-eval's own `--use_cache` keys on the request alone: lm-eval issue #4063;
harness/lm/cache.py).

    lm_eval.simple_evaluate(model="arches", model_args="run=results/...,batch_size=16", ...)
    arches lm-eval --model arches --model_args run=results/... --tasks ... (lm-eval's own CLI)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval imports its own models only while its registry is empty)
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator, normalize_gen_kwargs

from arches.data.tokenizer import load_tokenizer, tokenizer_hash
from arches.errors import RunFailure, UserError
from arches.progress import request_progress, task_label
from arches.train.record import RUN_RECORD, read_record
from arches.train.run_folder import CHECKPOINT_DIR, MODEL_FILE, TOKENIZER_FILE, WEIGHTS_FILE, load_model, pause_point
from harness.lm.cache import CACHE_FILE, RequestCache, checkpoint_sha256

log = logging.getLogger(__name__)

# Part of every cache key: bump it when a change to the scorers changes their scores
# (4: an empty context is no context in the blank formats, T5's sentinel and GLM's [MASK]).
CACHE_VERSION = 4
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_MAX_BATCH_SIZE = 512
CPU_AUTO_BATCH_SIZE = 16  # a CPU out-of-memory kills the process, so there is nothing to probe


def _parse_batch_size(value: Any) -> int | str:
    if isinstance(value, str) and value.strip().lower().startswith("auto"):
        return "auto"  # lm-eval's "auto:N" re-probes N times; one probe at the longest input is enough here
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise UserError(f"batch_size={value!r} must be a positive integer or 'auto'") from None
    if size < 1:
        raise UserError(f"batch_size={value!r} must be a positive integer or 'auto'")
    return size


def _parse_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise UserError(f"{key}={value!r} must be true or false")


@register_model("arches")
class ArchesLM(LM):
    """An arches run folder as an lm-eval model.

    Options (lm-eval `--model_args`): `run` (the run folder, or its checkpoint/
    folder), `batch_size` (int or `auto`: on a GPU the largest batch that fits a
    max_len forward, halving on out-of-memory; on a CPU 16), `max_batch_size`
    (where `auto` starts), `device` (`auto`: cuda if available), `dtype`
    (float32 | bfloat16 | float16; default bfloat16 on a GPU, float32 on a CPU),
    `format` (the family's scoring format, e.g. t5_sentinel | plain for
    encoder-decoders), `stride` (rolling-window stride in tokens), `span` (tokens predicted per rolling
    window; 0 for whole windows; the family decides by default), `cache` (reuse
    and store results in <run>/eval/cache.sqlite; default true)."""

    def __init__(
        self,
        run: str | Path | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        format: str | None = None,
        stride: int | None = None,
        span: int | None = None,
        cache: bool | str = True,
    ) -> None:
        super().__init__()
        if run is None:
            raise UserError("the arches model needs a run folder: --model_args run=<results/...>")
        self._batch_size = _parse_batch_size(batch_size)
        use_cache = _parse_bool(cache, "cache")
        run_dir = Path(run)
        if run_dir.name == CHECKPOINT_DIR and (run_dir / WEIGHTS_FILE).exists():
            run_dir = run_dir.parent
        if not (run_dir / CHECKPOINT_DIR / WEIGHTS_FILE).exists():
            raise UserError(
                f"{run_dir} has no checkpoint ({run_dir / CHECKPOINT_DIR / WEIGHTS_FILE} is missing); "
                "train it first with `arches train`"
            )
        self.run_dir = run_dir
        self.tokenizer = self._checked_tokenizer(run_dir)

        device = "auto" if device in (None, "auto") else str(device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's CLI passes device=cuda:0 unless told otherwise; like its HF model, fall back
            log.warning("arches: device=%s requested but CUDA is not available; using the CPU", device)
            device = "cpu"
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        if dtype in (None, "auto"):
            dtype = "bfloat16" if self._device.type == "cuda" else "float32"
        if dtype not in DTYPES:
            raise UserError(f"dtype={dtype!r} is not valid; choose one of: {', '.join(DTYPES)}")
        self.dtype = dtype

        self.checkpoint = checkpoint_sha256(run_dir)
        model, self.meta = load_model(run_dir, device=str(self._device))
        self.model = model.to(DTYPES[dtype]).eval()
        if self.tokenizer.get_vocab_size() > self.model.cfg.vocab_size:
            raise UserError(
                f"{run_dir / TOKENIZER_FILE} has {self.tokenizer.get_vocab_size()} tokens but the model only "
                f"{self.model.cfg.vocab_size}; the run folder is inconsistent: train it again"
            )
        from arches.registry import family

        spec = family(self.meta["family"])
        options = {k: v for k, v in {"format": format, "stride": stride, "span": span}.items() if v is not None}
        trained = self.meta.get("trained_lengths")
        if trained is None:
            log.warning(
                "arches: %s records no trained_lengths in %s (written before they were); its requests are cut to "
                "max_len=%d, which may reach positions it never trained on: train it again to score it inside them",
                run_dir, CHECKPOINT_DIR + "/" + MODEL_FILE, self.model.cfg.max_len,
            )
        try:
            self.scorer = spec.scorer(self.model, self.tokenizer, self.meta["arch"], trained=trained, **options)
        except UserError as error:
            raise UserError(f"{run_dir}: {error}") from None

        self.max_batch_size = int(max_batch_size) if max_batch_size else DEFAULT_MAX_BATCH_SIZE
        self.batch_sizes: dict[int, int] = {}
        self.cache = RequestCache(run_dir / CACHE_FILE, self.checkpoint) if use_cache else None
        self._warned_sampling = False

    # --- construction from lm-eval's arguments ---

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> ArchesLM:
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict | None = None) -> ArchesLM:
        # lm-eval always passes its own batch_size (1 unless --batch_size is given) next to
        # --model_args; a value in model_args (`run=...,batch_size=8`) wins over it.
        merged = {k: v for k, v in (additional_config or {}).items() if v is not None}
        merged.update(arg_dict)
        valid = ("run", "batch_size", "max_batch_size", "device", "dtype", "format", "stride", "span", "cache")
        for key in merged:
            if key not in valid:
                from arches.errors import closest

                raise UserError(f"unknown arches model argument '{key}'; valid: {', '.join(valid)}.{closest(key, valid)}")
        return cls(**merged)

    @staticmethod
    def _checked_tokenizer(run_dir: Path):
        path = run_dir / TOKENIZER_FILE
        if not path.exists():
            raise UserError(f"{run_dir} has no {TOKENIZER_FILE}; it is not a complete run folder: train it again")
        tokenizer = load_tokenizer(path)
        expected = read_record(run_dir).tokenizer_hash
        found = tokenizer_hash(tokenizer)
        if expected is None:
            raise UserError(f"{run_dir / RUN_RECORD} records no tokenizer_hash, so {path} cannot be checked; train the run again")
        if found != expected:
            raise UserError(
                f"{path} has tokenizer hash {found}, but the checkpoint was trained with tokenizer hash {expected} "
                f"({run_dir / RUN_RECORD}); restore the run's own tokenizer.json"
            )
        return tokenizer

    # --- what lm-eval and the records read ---

    @property
    def scoring_format(self) -> str:
        """How requests are laid out for this family (e.g. `t5_sentinel`, `pll_word_l2r`)."""
        return self.scorer.format

    @property
    def tokenizer_name(self) -> str:
        return f"arches-{tokenizer_hash(self.tokenizer)[:16]}"

    @property
    def batch_size(self) -> int:
        if self._batch_size != "auto":
            return int(self._batch_size)
        if 0 not in self.batch_sizes:
            self.batch_sizes[0] = self._probe_batch_size()
        return self.batch_sizes[0]

    def _probe_batch_size(self) -> int:
        if self._device.type != "cuda":
            return min(self.max_batch_size, CPU_AUTO_BATCH_SIZE)
        size = self.max_batch_size
        while size >= 1:
            try:
                self.scorer.probe(size)
                torch.cuda.empty_cache()
                log.info("arches: batch_size auto -> %d", size)
                return size
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                size //= 2
        raise RunFailure(f"out of GPU memory even at batch size 1 for {self.run_dir}; use a smaller max_len or a larger GPU")

    def get_model_info(self) -> dict:
        return {
            "arches_run": str(self.run_dir),
            "arches_family": self.meta["family"],
            "arches_preset": self.meta["arch"].get("name"),
            "checkpoint_sha256": self.checkpoint,
            "scoring_format": self.scoring_format,
            "model_dtype": self.dtype,
            "model_num_parameters": sum(p.numel() for p in self.model.parameters()),
        }

    # --- the three request types ---

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        args = [tuple(r.args) for r in requests]
        lengths = self._lengths([a[0] for a in args], [a[1] for a in args])
        results = self._run(
            "loglikelihood", args, lengths, lambda batch: self.scorer.loglikelihood(batch, self.batch_size), disable_tqdm,
            label=task_label(requests, "loglikelihood"),
        )
        return [(float(lp), bool(greedy)) for lp, greedy in results]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        args = [tuple(r.args) for r in requests]
        lengths = self._lengths([a[0] for a in args])
        results = self._run(
            "loglikelihood_rolling", args, lengths,
            lambda batch: self.scorer.loglikelihood_rolling([text for (text,) in batch], self.batch_size), disable_tqdm,
            label=task_label(requests, "loglikelihood_rolling"),
        )
        return [float(r) for r in results]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        args = [(r.args[0], r.args[1]) for r in requests]
        lengths = self._lengths([a[0] for a in args])
        return self._run("generate_until", args, lengths, self._generate_batch, disable_tqdm, group_by_kwargs=True,
                         label=task_label(requests, "generate_until"))

    def _generate_batch(self, batch: list[tuple[str, dict]]) -> list[str]:
        kwargs = normalize_gen_kwargs(dict(batch[0][1] or {}), default_max_gen_toks=256)
        if kwargs.get("do_sample") and not self._warned_sampling:
            log.warning("arches: generation is greedy; do_sample=%s and its sampling settings are ignored", kwargs["do_sample"])
            self._warned_sampling = True
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        return self.scorer.generate([context for context, _ in batch], [until] * len(batch), int(kwargs["max_gen_toks"]))

    # --- sorting, batching and caching, the same for every request type ---

    def _lengths(self, *columns: Sequence[str]) -> list[int]:
        """Token counts per request (the sort key), tokenizing each distinct string once."""
        distinct = list(dict.fromkeys(s for column in columns for s in column))
        counts = {s: len(e.ids) for s, e in zip(distinct, self.tokenizer.encode_batch(distinct, add_special_tokens=False))}
        return [sum(counts[column[i]] for column in columns) for i in range(len(columns[0]))]

    def _key(self, kind: str, args: tuple) -> str:
        request = {
            "version": CACHE_VERSION,
            "kind": kind,
            "args": list(args),
            "scorer": self.scorer.settings if hasattr(self.scorer, "settings") else {"format": self.scorer.format},
            "dtype": self.dtype,
        }
        return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode("utf-8")).hexdigest()

    def _run(
        self,
        kind: str,
        args: list[tuple],
        lengths: list[int],
        score: Callable[[list[tuple]], list[Any]],
        disable_tqdm: bool,
        group_by_kwargs: bool = False,
        label: str | None = None,
    ) -> list[Any]:
        results: list[Any] = [None] * len(args)
        keys = [self._key(kind, a) for a in args]
        cached = self.cache.get(keys) if self.cache is not None else {}
        todo = []
        for index, key in enumerate(keys):
            if key in cached:
                results[index] = cached[key]
            else:
                todo.append(index)
        if todo:
            # longest first: the first batch shows the worst padding and any out-of-memory at once
            collator = Collator(
                [(i, args[i]) for i in todo],
                sort_fn=lambda item: (-lengths[item[0]], item[0]),
                group_by="gen_kwargs" if group_by_kwargs else None,
                group_fn=lambda item: item[1][1],
            )
            # a bar on a terminal, plain lines in a log (arches.progress), labelled with the run and task
            with request_progress(len(todo), self.run_dir.name, label or kind, disable=disable_tqdm) as progress:
                for batch in collator.get_batched(n=self.batch_size):
                    scores = score([a for _, a in batch])
                    for (index, request), result in zip(batch, scores, strict=True):
                        results[index] = result
                        self.cache_hook.add_partial(kind, request, result)
                    if self.cache is not None:  # batch by batch, so an interrupted run resumes
                        self.cache.put(kind, [(keys[index], results[index]) for index, _ in batch])
                        pause_point(f"eval-cached:{self.run_dir.name}")  # a test hook (arches.train.run_folder)
                    progress.update(len(batch))
        if kind == "loglikelihood":
            return [tuple(r) for r in results]
        return results
