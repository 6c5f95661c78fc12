"""The encoder-decoder family (T5, Raffel et al. 2020): a bidirectional encoder and
a causal decoder that cross-attends to it, sharing one embedding.

Objectives:
- `span_corruption` (T5 §3.1.4): 15% of tokens in spans of mean length 3, each span
  replaced by a sentinel in the encoder input; the decoder predicts the spans, each
  after its sentinel.
- `prefix_lm` (§3.2.1 and Wang et al. 2022's ED:PLM): a random split point; the
  prefix goes to the encoder and the decoder predicts the rest.

Sizing follows T5 §3.2.2: with as many layers in the encoder as in the decoder, each
token runs through one stack, so FLOPs per token match a decoder of that depth with
about twice its parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from arches.core import LMHead, ModelConfig, Transformer, masks
from arches.core.attention import KVCache
from arches.core.flops import TRAINING_MULTIPLIER, expected, head_flops, memory_kv_flops, stack_forward_flops
from arches.core.stack import init_weights
from arches.data.tokenizer import Specials
from arches.errors import UserError
from arches.families.noise import (
    batch_rng,
    check_sentinel_capacity,
    pad_labels,
    pad_stack,
    random_spans_noise_mask,
    span_corrupt,
    span_corrupted_lengths,
)
from arches.families.objective import ArchConfig
from arches.families.scoring import (
    ROLLING_SPAN,
    BaseScorer,
    GreedyStops,
    TokenPair,
    check_options,
    choose_format,
    pad_rows,
    score_positions,
    sum_by_request,
)
from arches.families.spec import AlternativeFormat, FamilySpec, hf_eos, special_roles, token_of

OBJECTIVES = ("span_corruption", "prefix_lm")


class EncoderDecoderLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Transformer(cfg)
        self.decoder = Transformer(cfg, cross_attention=True, embeddings=self.encoder.embed, bidirectional_buckets=False)
        self.head = LMHead(cfg, self.encoder.embed)
        init_weights(self, cfg)

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The encoder's states and the padding mask the decoder's cross-attention uses."""
        is_real = batch.get("is_real")
        padding = masks.padding(is_real) if is_real is not None else None
        return self.encoder(batch["input_ids"], mask=masks.AttentionMask(is_real=is_real)), padding

    def decode(
        self, batch: dict[str, torch.Tensor], memory: torch.Tensor, memory_mask: torch.Tensor | None, cache=None
    ) -> torch.Tensor:
        """The decoder's final hidden states (B, T_dec, D)."""
        return self.decoder(batch["decoder_input_ids"], is_causal=True, memory=memory, memory_mask=memory_mask, cache=cache)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        memory, memory_mask = self.encode(batch)
        hidden = self.decode(batch, memory, memory_mask)
        if "labels" not in batch:
            return self.head(hidden), None  # (B, T_dec, V)
        # targets are labelled but for their padding: every position takes the head
        return self.head.logits_and_loss(hidden, batch["labels"])


def check_arch(settings: ArchConfig) -> None:
    """The encoder_decoder's rule on its `arch` section (ArchConfig checks the rest)."""
    if settings.prefix_lm:
        raise UserError("arch.prefix_lm applies to decoders; an encoder_decoder is always bidirectional over its input")


def build(cfg: ModelConfig, arch: dict) -> EncoderDecoderLM:
    ArchConfig.of(arch)  # checked before a model is built
    return EncoderDecoderLM(cfg)


def seq2seq_batch(pairs: list[tuple[np.ndarray, np.ndarray]], specials: Specials) -> dict:
    """(encoder input, target) pairs -> a padded batch; the decoder input is the
    target shifted right behind <bos> (teacher forcing)."""
    encoder_inputs = [inputs for inputs, _ in pairs]
    targets = [target for _, target in pairs]
    decoder_inputs = [np.concatenate([[specials.bos], target[:-1]]) for target in targets]
    input_ids = pad_stack(encoder_inputs, specials.pad)
    lengths = torch.tensor([len(x) for x in encoder_inputs])
    return {
        "input_ids": input_ids,
        "is_real": torch.arange(input_ids.shape[1])[None, :] < lengths[:, None],
        "decoder_input_ids": pad_stack(decoder_inputs, specials.pad),
        "labels": pad_labels(targets),
    }


def collate(arch: dict, specials: Specials, seq_len: int, seed: int = 0, vocab_size: int | None = None) -> Callable:
    settings = ArchConfig.of(arch)
    # one generator per batch, from (seed, window indices): see batch_rng
    stream = np.random.default_rng(seed)

    def span_corruption(windows: list[dict]) -> dict:
        rng = batch_rng(seed, windows, stream)
        pairs = []
        for window in windows:
            tokens = window["tokens"].numpy()
            noise = random_spans_noise_mask(rng, len(tokens), settings.noise_density, settings.mean_span_length)
            pairs.append(span_corrupt(tokens, noise, specials.sentinels, specials.eos))
        return seq2seq_batch(pairs, specials)

    def prefix_lm(windows: list[dict]) -> dict:
        rng = batch_rng(seed, windows, stream)
        pairs = []
        for window in windows:
            tokens = window["tokens"].numpy()
            split = int(rng.integers(1, len(tokens)))
            pairs.append((tokens[:split], tokens[split:]))
        return seq2seq_batch(pairs, specials)

    return {"span_corruption": span_corruption, "prefix_lm": prefix_lm}[settings.objective]


def input_len(arch: dict, seq_len: int) -> int:
    settings = ArchConfig.of(arch)
    if settings.objective == "span_corruption":
        check_sentinel_capacity(settings, seq_len)
    return seq_len + 1  # the longest encoder input (or target) of a window, with eos


def trained_lengths(arch: dict, seq_len: int) -> dict[str, int]:
    """`input`: the longest encoder input; `target`: the longest decoder input. Span
    corruption's are fixed (the corrupted window with eos; sentinels, spans and eos);
    the prefix LM's split leaves at least one token on each side."""
    settings = ArchConfig.of(arch)
    if settings.objective == "span_corruption":
        inputs, targets = span_corrupted_lengths(settings, seq_len)
        return {"input": inputs, "target": targets}
    return {"input": seq_len - 1, "target": seq_len - 1}


def flops_per_token(cfg: ModelConfig, arch: dict, seq_len: int) -> float:
    """Training FLOPs per window token (arches.core.flops): encoder tokens run the
    encoder, and give each decoder layer its cross-attention keys and values; decoder
    tokens run the decoder, attending to the whole memory, and the head, which every
    target position takes. Prefix LM: the exact mean over its uniform split."""

    def forward(encoder_len: int, decoder_len: int) -> float:
        encoder = stack_forward_flops(cfg, encoder_len) + encoder_len * cfg.n_layers * memory_kv_flops(cfg)
        decoder = stack_forward_flops(cfg, decoder_len, cross_attended=encoder_len) + decoder_len * head_flops(cfg)
        return encoder + decoder

    settings = ArchConfig.of(arch)
    if settings.objective == "span_corruption":
        mean = forward(*span_corrupted_lengths(settings, seq_len))  # each with its eos
    else:
        # the first `split` tokens go to the encoder, the rest to the decoder (collate)
        mean = expected(lambda split: forward(split, seq_len - split), range(1, seq_len))
    return TRAINING_MULTIPLIER * mean / seq_len


# --- scoring (lm-eval): context -> encoder, continuation scored by the decoder ---

# the scoring formats, and how each lays a prompt out for generation (the report's Samples notes)
SCORING_FORMATS = {
    "t5_sentinel": "the prompt then T5's sentinel `<extra_id_0>`, the blank filled by the decoder (Raffel et al. 2020)",
    "plain": "the prompt to the encoder, continued by the decoder",
    "plain_eos": "the prompt and `</s>` to the encoder, continued by the decoder",
}
SCORER_OPTIONS = ("format", "stride", "span")


class EncoderDecoderScorer(BaseScorer):
    """The context goes to the encoder; the decoder scores the continuation.

    Format `t5_sentinel` (the default for span-corruption models) asks the question
    the way T5 was trained: the encoder reads `context <extra_id_0> <eos>` (training
    inputs always end in <eos>) and the decoder reads `<bos> <extra_id_0>
    continuation`, scoring only the continuation's tokens. Format `plain` (the default
    for prefix-LM models, whose training pairs are a prefix and its continuation):
    encoder `context`, decoder `<bos> continuation`. Format `plain_eos`: encoder
    `context <eos>`, decoder `<bos> continuation`: T5's own supervised format (its
    tokenizer ends every input with </s>), and what lm-eval's `hf` backend gives a T5."""

    family = "encoder_decoder"
    rolling_margin = 2

    @property
    def fills_blanks(self) -> bool:
        return self.format == "t5_sentinel"

    def continuation_room(self) -> int:
        # the decoder reads its start markers and all but the last continuation token
        return self.trained.get("target", self.max_len) - len(self.decoder_start()) + 1

    def encoder_input(self, context: list[int]) -> list[int]:
        if self.format == "t5_sentinel":
            return context[-(self.max_len - 2) :] + [self.specials.sentinels[0], self.specials.eos]
        if self.format == "plain_eos":
            return context[-(self.max_len - 1) :] + [self.specials.eos]
        return context[-self.max_len :]

    def decoder_start(self) -> list[int]:
        if self.format == "t5_sentinel":
            return [self.specials.bos, self.specials.sentinels[0]]
        return [self.specials.bos]

    def encode_rows(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, is_real = pad_rows(rows, self.specials.pad, self.device)
        return self.model.encode({"input_ids": tokens, "is_real": is_real})

    def score_batch(self, requests: list[TokenPair]) -> list[tuple[float, bool]]:
        start = self.decoder_start()
        encoder_rows, decoder_rows, owners, positions, targets = [], [], [], [], []
        for index, (context, continuation) in enumerate(requests):
            self.check_fits(continuation, self.continuation_room(), "target")
            encoder_rows.append(self.encoder_input(context))
            decoder_rows.append(start + continuation[:-1])
            for offset, token in enumerate(continuation):
                owners.append(index)
                positions.append(len(start) - 1 + offset)
                targets.append(token)
        memory, memory_mask = self.encode_rows(encoder_rows)
        decoder_tokens, _ = pad_rows(decoder_rows, self.specials.pad, self.device)  # causal: right padding is harmless
        hidden = self.model.decoder(decoder_tokens, is_causal=True, memory=memory, memory_mask=memory_mask)
        logprobs, greedy = score_positions(self.model.head, hidden, owners, positions, targets)
        return sum_by_request(owners, logprobs, greedy, len(requests))

    def probe_pair(self) -> TokenPair:
        # the longest encoder input and the longest decoder input at once
        return [self.specials.eos] * self.max_len, [self.specials.eos] * self.continuation_room()

    @torch.inference_mode()
    def generate(self, contexts: list[str], until: list[list[str]], max_tokens: int) -> list[str]:
        """Greedy decoding with the decoder's KV cache; the encoder runs once. In the
        T5 format the answer ends at the next sentinel."""
        start = self.decoder_start()
        max_tokens = max(0, min(max_tokens, self.continuation_room()))  # inside the trained targets
        stop_ids = {self.specials.eos} | (set(self.specials.sentinels) if self.format == "t5_sentinel" else set())
        stops = GreedyStops(self.tokenizer, until, stop_ids, max_tokens)
        if max_tokens == 0:
            return stops.results()
        memory, memory_mask = self.encode_rows([self.encoder_input(self.generation_context(c, self.max_len)) for c in contexts])
        cache = KVCache()
        tokens = torch.tensor([start] * len(contexts), device=self.device)
        hidden = self.model.decoder(tokens, is_causal=True, memory=memory, memory_mask=memory_mask, cache=cache)
        while True:
            next_ids = self.model.head(hidden[:, -1]).float().argmax(-1)  # (B,)
            if stops.push(next_ids.tolist()):
                return stops.results()
            # one new query sees every cached key: no causal flag (SDPA would align it top-left)
            hidden = self.model.decoder(next_ids[:, None], memory=memory, memory_mask=memory_mask, cache=cache)


def scorer(model: EncoderDecoderLM, tokenizer, arch: dict, trained: dict | None = None, **options) -> EncoderDecoderScorer:
    """Options: `format` (t5_sentinel | plain | plain_eos; default t5_sentinel for span corruption,
    plain for prefix LM), `stride` (tokens newly scored per rolling window), `span`
    (tokens predicted per rolling window, 0 for whole windows; default ROLLING_SPAN
    with t5_sentinel: a span-corruption model fills short blanks, mean 3 tokens in
    T5 §3.3, and is asked for short ones when it scores running text)."""
    check_options("encoder_decoder", options, SCORER_OPTIONS)
    objective = ArchConfig.of(arch).objective
    default = "t5_sentinel" if objective == "span_corruption" else "plain"
    chosen = choose_format("encoder_decoder", options.get("format"), default, SCORING_FORMATS)
    if chosen == "t5_sentinel" and default != "t5_sentinel":
        raise UserError(
            f"format=t5_sentinel asks an encoder_decoder trained with arch.objective={objective} to fill "
            f"a sentinel blank it never saw; use format={default} (its objective's format)"
        )
    span = options.get("span", ROLLING_SPAN if chosen == "t5_sentinel" else None)
    scorer = EncoderDecoderScorer(model, tokenizer, arch, chosen, options.get("stride"), span, trained)
    if chosen == "t5_sentinel" and not scorer.specials.sentinels:
        raise UserError("format=t5_sentinel needs sentinel tokens (<extra_id_0>), which this tokenizer lacks; use format=plain_eos")
    return scorer


def hf_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our batch as a transformers *ForConditionalGeneration's keyword arguments (the same decoder inputs)."""
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["is_real"].long(),
        "decoder_input_ids": batch["decoder_input_ids"],
        "labels": batch["labels"],
    }


def hf_config_ids(specials: Specials) -> dict:
    return {"decoder_start_token_id": specials.bos}  # the decoder input starts with <bos> (seq2seq_batch)


def import_specials(tokenizer, config) -> dict:
    """T5's decoder starts from decoder_start_token_id (its <pad>); its span-corruption
    sentinels, if it has them."""
    bos = token_of(tokenizer, getattr(config, "decoder_start_token_id", None)) or tokenizer.pad_token
    names = special_roles(tokenizer, hf_eos(tokenizer, config), bos)
    vocab = tokenizer.get_vocab()
    while f"<extra_id_{len(names['sentinels'])}>" in vocab:
        names["sentinels"].append(f"<extra_id_{len(names['sentinels'])}>")
    return names


SPEC = FamilySpec(
    name="encoder_decoder",
    build=build,
    collate=collate,
    input_len=input_len,
    flops_per_token=flops_per_token,
    objectives=OBJECTIVES,
    check_arch=check_arch,
    scorer=scorer,
    trained_lengths=trained_lengths,
    formats=SCORING_FORMATS,
    scorer_options=SCORER_OPTIONS,
    alternatives=(AlternativeFormat("t5_sentinel", "plain", "T5 sentinel vs plain (encoder-decoder)"),),
    hf_batch=hf_batch,
    hf_config_ids=hf_config_ids,
    import_specials=import_specials,
    # T5's 568-token windows become 512 encoder inputs and 114 targets (Raffel et al. 2020, §3.1.4)
    bench_shape=(64, 568),
)
