"""What every family's scorer shares: the `Scorer` contract that lm-eval's adapter
(`harness.lm.model.ArchesLM`) calls, tokenizing requests the way lm-eval does, left
truncation, rolling windows, batching, and greedy stopping.

Conventions, the same in every family:
- Context and continuation are tokenized separately and their ids concatenated;
  trailing spaces of the context move to the continuation first (lm-eval's
  `TemplateLM._encode_pair`), so " yes" is scored as the word-initial token it is.
- An empty context (BLiMP's format, the minimal-pair tasks: `("", " " + sentence)`)
  becomes `<eos>`: every document in training ends with `<eos>`, so it is the token a
  model has seen before the start of a text. A format that asks for the continuation
  as a blank (T5's sentinels, GLM's [MASK]) needs no context: the blank alone is the
  prompt, so the sentence is the blank's whole filling (`BaseScorer.empty_context`).
- Contexts are truncated from the left to the longest input the checkpoint trained
  on (model.json's `trained_lengths`: a window's length, not the architecture's
  `max_len`, whose later learned position rows a training run never updates), as
  lm-eval's `hf` backend truncates to a model's trained context; a continuation that
  cannot fit on its own is an error, never silently cut.
- Logprobs are `log_softmax` in float32 of logits computed in the model's dtype,
  and the LM head runs only on the positions that are scored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any, Protocol

import torch
from tokenizers import Tokenizer
from torch import nn

from arches.data.tokenizer import Specials
from arches.errors import UserError

TokenPair = tuple[list[int], list[int]]  # (context ids, continuation ids)


class UnsupportedRequest(UserError, NotImplementedError):
    """A request type a family cannot answer. lm-eval's models signal an unsupported
    request type with NotImplementedError; as a UserError the `arches` CLI prints it
    as one line."""


class Scorer(Protocol):
    """The batched scoring contract every family's `SPEC.scorer(...)` returns."""

    format: str  # how requests are laid out for the model, recorded with the scores

    def loglikelihood(self, pairs: list[tuple[str, str]], batch_size: int) -> list[tuple[float, bool]]:
        """log P(continuation | context) and whether the continuation is the greedy one."""
        ...

    def loglikelihood_rolling(self, texts: list[str], batch_size: int) -> list[float]:
        """log P(text), every token scored once (a pseudo-log-likelihood for encoders)."""
        ...

    def generate(self, contexts: list[str], until: list[list[str]], max_tokens: int) -> list[str]:
        """Greedy continuations of a batch of contexts, cut before the first `until` string."""
        ...

    def probe(self, batch_size: int) -> None:
        """One worst-case forward with `batch_size` rows (to find the batch size that fits)."""
        ...


def choose_format(family: str, requested: str | None, default: str, valid: Sequence[str]) -> str:
    if requested is None:
        return default
    if requested not in valid:
        raise UserError(f"format={requested!r} is not a {family} scoring format; choose one of: {', '.join(valid)}")
    return requested


def check_options(family: str, options: dict[str, Any], valid: Sequence[str]) -> None:
    for key in options:
        if key not in valid:
            raise UserError(f"unknown {family} scorer option '{key}'; valid: {', '.join(valid)}")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte <-> printable-character table, inverted (what ByteLevel uses)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, characters)}


def _is_word_byte(byte: int) -> bool:
    # ASCII letters and digits, and any byte of a multi-byte UTF-8 character (é, ß, ...)
    return chr(byte).isalnum() if byte < 0x80 else True


def word_byte_tables(tokenizer: Tokenizer) -> tuple[list[bool], list[bool]]:
    """Two tables over the token ids, for grouping tokens into words (`word_ends`):
    `continues[t]`: t starts with a word character; `joins[t]`: t ends with a word
    character, or is nothing but spaces (byte-level BPE leaves the space 'Ġ' alone
    when " h" was never merged, and it opens the word that follows). Special tokens
    are neither, so they always stand alone."""
    decoder = _byte_decoder()
    special = set(tokenizer.get_added_tokens_decoder())
    continues, joins = [], []
    for token_id in range(tokenizer.get_vocab_size()):
        token = tokenizer.id_to_token(token_id)
        if token is None or token_id in special or not token or any(c not in decoder for c in token):
            continues.append(False)
            joins.append(False)
            continue
        raw = bytes(decoder[c] for c in token)
        continues.append(_is_word_byte(raw[0]))
        joins.append(_is_word_byte(raw[-1]) or set(raw) == {0x20})
    return continues, joins


def word_ends(ids: Sequence[int], continues: Sequence[bool], joins: Sequence[bool]) -> list[int]:
    """For each position i of `ids`, the index of the last token of the word i belongs to.

    A word is a maximal run of tokens in which every token after the first starts with
    a word character (an ASCII letter or digit, or a byte of a non-ASCII character;
    not a space, newline or punctuation) and follows a token that ends with one (or is
    a bare space). So " barley," = [" bar", "ley", ","] holds the words [" bar", "ley"]
    and [","], and " horses" = [" ", "h", "orses"] is one word."""
    last = [0] * len(ids)
    end = len(ids) - 1
    for i in range(len(ids) - 1, -1, -1):
        last[i] = end
        continues_previous = i > 0 and continues[ids[i]] and joins[ids[i - 1]]
        if not continues_previous:
            end = i - 1
    return last


def rolling_windows(ids: list[int], prefix: int, window: int, stride: int) -> list[TokenPair]:
    """Cut a long text into (context, prediction) windows of at most `window` tokens
    (lm-eval's `get_rolling_token_windows`, made disjoint): every token is predicted
    exactly once; after the first window each predicts `stride` new tokens with the
    `window - stride` tokens before them as context."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    stride = max(1, min(stride, window))
    windows = get_rolling_token_windows(
        token_list=ids, prefix_token=prefix, max_seq_len=window, context_len=window - stride + 1
    )
    return [make_disjoint_window(w) for w in windows]


# Tokens a span-infilling model (T5's span corruption, GLM's [MASK] blanks) predicts
# per rolling window: a few of their 3-token training spans. On the demo's tiny t5 and
# glm this took held-out bits/byte from 3.57 and 4.18 (whole 510-token windows) to
# 3.21 and 3.19; the decoders' default stays lm-eval's whole windows.
ROLLING_SPAN = 8


def span_windows(ids: list[int], prefix: int, window: int, span: int) -> list[TokenPair]:
    """Cut a text into (context, prediction) pairs that each predict at most `span`
    tokens, with up to `window - span` tokens before them as context (the first: just
    `prefix`). Every token is predicted exactly once, so the sum is the text's
    log-likelihood by the chain rule; a span-infilling model is asked for short
    blanks, as it was trained, instead of a whole window at once."""
    span = max(1, min(span, window - 1))
    return [
        (ids[max(0, start - (window - span)) : start] or [prefix], ids[start : start + span])
        for start in range(0, len(ids), span)
    ]


def batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in chunks of `batch_size`, longest first, so each chunk pads little."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), max(1, batch_size)):
        yield order[start : start + max(1, batch_size)]


def pad_rows(rows: Sequence[Sequence[int]], value: int, device: torch.device, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad rows to one length: (tokens (B, T), is_real (B, T))."""
    length = max(len(r) for r in rows)
    tokens = torch.full((len(rows), length), value, dtype=torch.long)
    is_real = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if left else slice(0, len(row))
        tokens[i, span] = torch.as_tensor(list(row), dtype=torch.long)
        is_real[i, span] = True
    return tokens.to(device), is_real.to(device)


def score_positions(
    head: nn.Module, hidden: torch.Tensor, rows: list[int], positions: list[int], targets: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of `targets` at (row, position) of `hidden` (B, T, D), and
    whether each target is the argmax there. The head runs on those positions only."""
    device = hidden.device
    selected = hidden[torch.tensor(rows, device=device), torch.tensor(positions, device=device)]  # (N, D)
    logprobs = head(selected).float().log_softmax(-1)  # (N, V)
    target = torch.tensor(targets, device=device)
    picked = logprobs.gather(1, target[:, None])[:, 0]
    return picked.cpu(), (logprobs.argmax(-1) == target).cpu()


def sum_by_request(owners: list[int], logprobs: torch.Tensor, greedy: torch.Tensor, count: int) -> list[tuple[float, bool]]:
    """Sum per-token scores into per-request (logprob, all tokens greedy)."""
    totals = [0.0] * count
    all_greedy = [True] * count
    for owner, logprob, is_greedy in zip(owners, logprobs.tolist(), greedy.tolist()):
        totals[owner] += logprob
        all_greedy[owner] = all_greedy[owner] and bool(is_greedy)
    return list(zip(totals, all_greedy))


class GreedyStops:
    """Tracks a batch of greedy generations: stops a row at a stop token, at any of its
    `until` strings, or after `max_tokens`; returns each text cut before the first
    `until` string (what lm-eval's `generate_until` expects)."""

    def __init__(self, tokenizer: Tokenizer, until: list[list[str]], stop_ids: set[int], max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.until = [[s for s in row if s] for row in until]
        self.stop_ids = stop_ids
        self.max_tokens = max_tokens
        self.generated: list[list[int]] = [[] for _ in until]
        self.done = [max_tokens <= 0] * len(until)

    def text(self, row: int) -> str:
        return self.tokenizer.decode(self.generated[row], skip_special_tokens=True)

    def push(self, next_ids: Sequence[int]) -> bool:
        """Record one new token per row; True when every row is done."""
        for row, token in enumerate(next_ids):
            if self.done[row]:
                continue
            if token in self.stop_ids:
                self.done[row] = True
                continue
            self.generated[row].append(int(token))
            if len(self.generated[row]) >= self.max_tokens or any(s in self.text(row) for s in self.until[row]):
                self.done[row] = True
        return all(self.done)

    def results(self) -> list[str]:
        out = []
        for row in range(len(self.generated)):
            text = self.text(row)
            for stop in self.until[row]:
                text = text.split(stop)[0]
            out.append(text)
        return out


class BaseScorer:
    """Tokenizing, truncation and batching shared by the families; a family supplies
    `score_tokens` (and `generate`)."""

    family = "base"
    rolling_margin = 0  # tokens a rolling window leaves for the family's own markers

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        arch: dict,
        format: str,
        stride: int | None,
        span: int | None = None,
        trained: dict[str, int] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.arch = dict(arch or {})
        self.format = format
        # an imported model names its own tokenizer's special tokens (arches.interop)
        self.specials = Specials.from_tokenizer(tokenizer, self.arch.get("special_tokens"))
        # The lengths the checkpoint trained on (the family's `trained_lengths`); without
        # them (an imported model, or a checkpoint older than them) the architecture's max_len.
        self.trained = {key: min(int(value), int(model.cfg.max_len)) for key, value in (trained or {}).items()}
        # the longest input (the encoder's, for an encoder-decoder) that every request is cut to
        self.max_len = self.trained.get("input", int(model.cfg.max_len))
        window = self.max_len - self.rolling_margin
        room = self.continuation_room()
        if stride is not None and (not isinstance(stride, int) or stride < 1):
            raise UserError(f"stride={stride!r} must be a positive integer (tokens newly scored per rolling window)")
        # a rolling window never predicts more than a continuation may hold
        self.stride = min(stride or max(1, window // 2), window, room)
        if span is not None and (isinstance(span, bool) or not isinstance(span, int) or span < 0):
            raise UserError(f"span={span!r} must be a number of tokens >= 1 (tokens predicted per rolling window), or 0 for whole windows")
        self.span = min(span, room) if span else None
        self._encoded: dict[str, list[int]] = {}

    # A family overrides these two.
    def continuation_room(self) -> int:
        """The most continuation tokens one forward may score inside the trained lengths."""
        return self.max_len

    @property
    def fills_blanks(self) -> bool:
        """Whether this format asks for the continuation as a blank at the end of the
        context (T5's sentinels, GLM's [MASK]). Such a format scores a continuation
        longer than `continuation_room` as successive blanks, each with the earlier
        ones appended to the context (the chain rule), so no request leaves the span
        lengths the objective trained; any other format refuses it."""
        return False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def settings(self) -> dict[str, Any]:
        """Everything besides the checkpoint and the request that changes a score."""
        return {"format": self.format, "stride": self.stride, "span": self.span, "trained": self.trained}

    def encode(self, text: str) -> list[int]:
        ids = self._encoded.get(text)
        if ids is None:
            if len(self._encoded) > 100_000:
                self._encoded.clear()
            ids = self._encoded[text] = self.tokenizer.encode(text, add_special_tokens=False).ids
        return list(ids)

    def encode_pair(self, context: str, continuation: str) -> TokenPair:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        context_ids = self.encode(context) if context else []
        continuation_ids = self.encode(continuation)
        if not continuation_ids:
            raise UserError(f"an empty continuation cannot be scored (context {context[-40:]!r})")
        return context_ids or self.empty_context(), continuation_ids

    def empty_context(self) -> list[int]:
        """What an empty context is scored after: `<eos>` (a text's start, as training saw
        it), or nothing in a blank format, whose markers are the whole prompt: T5's encoder
        reads `<extra_id_0> <eos>`, GLM's Part A is `[MASK]` alone."""
        return [] if self.fills_blanks else [self.specials.eos]

    def check_fits(self, continuation: list[int], room: int, what: str = "input") -> None:
        if len(continuation) > room:
            raise UserError(
                f"a continuation of {len(continuation)} tokens does not fit the {self.trained.get(what, self.max_len)}-token "
                f"{what} this {self.family} model was trained on ({room} tokens at most); score shorter continuations, "
                f"or train with a longer data.seq_len"
            )

    # --- the contract ---

    def loglikelihood(self, pairs: list[tuple[str, str]], batch_size: int) -> list[tuple[float, bool]]:
        return self.score_tokens([self.encode_pair(c, x) for c, x in pairs], batch_size)

    def loglikelihood_rolling(self, texts: list[str], batch_size: int) -> list[float]:
        windows: list[TokenPair] = []
        owners: list[int] = []
        for index, text in enumerate(texts):
            ids, window = self.encode(text), self.max_len - self.rolling_margin
            cut = span_windows(ids, self.specials.eos, window, self.span) if self.span else rolling_windows(ids, self.specials.eos, window, self.stride)
            if cut and cut[0][0] == [self.specials.eos]:  # the text's start, as an empty context is scored
                cut[0] = (self.empty_context(), cut[0][1])
            for window in cut:
                windows.append(window)
                owners.append(index)
        totals = [0.0] * len(texts)
        for owner, (logprob, _) in zip(owners, self.score_tokens(windows, batch_size)):
            totals[owner] += logprob
        return totals

    def score_tokens(self, requests: list[TokenPair], batch_size: int) -> list[tuple[float, bool]]:
        """(logprob, is_greedy) of each continuation, batched longest first."""
        if self.fills_blanks and any(len(x) > self.continuation_room() for _, x in requests):
            return self.score_as_blanks(requests, batch_size)
        results: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        with torch.inference_mode():
            for chunk in batches([len(c) + len(x) for c, x in requests], batch_size):
                for index, result in zip(chunk, self.score_batch([requests[i] for i in chunk])):
                    results[index] = result
        return results

    def score_as_blanks(self, requests: list[TokenPair], batch_size: int) -> list[tuple[float, bool]]:
        """Each continuation as blanks of at most `continuation_room` tokens, in order:
        log P(x | c) = sum_k log P(x_k | c, x_<k), every piece asked as a trained blank."""
        room = self.continuation_room()
        pieces, owners = [], []
        for index, (context, continuation) in enumerate(requests):
            for start in range(0, len(continuation), room):
                pieces.append((context + continuation[:start], continuation[start : start + room]))
                owners.append(index)
        totals, all_greedy = [0.0] * len(requests), [True] * len(requests)
        for owner, (logprob, greedy) in zip(owners, self.score_tokens(pieces, batch_size)):
            totals[owner] += logprob
            all_greedy[owner] = all_greedy[owner] and greedy
        return list(zip(totals, all_greedy))

    def score_batch(self, requests: list[TokenPair]) -> list[tuple[float, bool]]:
        raise NotImplementedError

    def probe_pair(self) -> TokenPair:
        """A request that fills the model's input (the decoder's here: max_len + 1 ids)."""
        half = self.max_len // 2
        return [self.specials.eos] * (self.max_len + 1 - half), [self.specials.eos] * half

    def probe(self, batch_size: int) -> None:
        self.score_tokens([self.probe_pair()] * batch_size, batch_size)

    def generation_context(self, context: str, room: int) -> list[int]:
        """A context's ids for generation, left-truncated to `room` tokens (at least one)."""
        ids = self.encode(context) if context else []
        ids = ids or [self.specials.eos]
        return ids[-max(1, room) :]
