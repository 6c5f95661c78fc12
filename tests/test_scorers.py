"""Every family's scorer against hand-written, unbatched references on tiny models
built here (parametrized over the presets in sweeps/arch/, so a new preset is tested
by adding it): loglikelihood, batch invariance, PLL-word-l2r, GLM's Part A/B,
is_greedy, rolling windows and greedy generation with the KV cache."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import PRESETS, composed, tiny_text

from arches.core import masks
from arches.families.scoring import (
    ROLLING_SPAN,
    UnsupportedRequest,
    rolling_windows,
    span_windows,
    word_byte_tables,
    word_ends,
)
from arches.errors import UserError
from arches.registry import family, model_config
from arches.data.tokenizer import Specials, train_tokenizer

MAX_LEN = 64
TOLERANCE = 1e-5
# extra variants beyond the presets: the other scoring format of each two-format family
VARIANTS = [(name, None) for name in PRESETS] + [("t5", "plain"), ("glm", "gmask"), ("bert", "pll"), ("prefix_lm", "causal")]


@pytest.fixture(scope="session")
def tokenizer():
    rng = random.Random(0)
    return train_tokenizer([tiny_text(rng, 15) for _ in range(20)], 400)


def build_model(name: str, tokenizer, seed: int = 0, max_len: int = MAX_LEN):
    arch = composed(name)[0]
    size = {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_len": max_len}
    cfg = model_config(arch, size, tokenizer.get_vocab_size())
    torch.manual_seed(seed)
    return family(arch["family"]).build(cfg, arch).eval(), arch


_MODELS: dict = {}


def model_and_scorer(name: str, fmt: str | None, tokenizer):
    if name not in _MODELS:
        _MODELS[name] = build_model(name, tokenizer)
    model, arch = _MODELS[name]
    options = {"format": fmt} if fmt else {}
    return model, arch, family(arch["family"]).scorer(model, tokenizer, arch, **options)


def requests() -> list[tuple[str, str]]:
    rng = random.Random(1)
    pairs = [
        ("The old king walked through", " the silent harbour"),
        ("", "A young sailor spoke of a letter."),
        ("Her brother dreamed of ", "the winter sea"),  # trailing space moves to the continuation
        (tiny_text(rng, 12), " at last."),  # longer than max_len: cut from the left
        ("The fool", " forgot"),
        ("My gentle friend sang about the burning city", " and wept, before the dawn."),
    ]
    for _ in range(5):
        text = tiny_text(rng, 1).strip()
        cut = rng.randint(5, len(text) - 5)
        pairs.append((text[:cut], text[cut:]))
    return pairs


# --- the references: one request at a time, plain tensors, the model's own forward ---


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    eos = Specials.from_tokenizer(tokenizer).eos
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    context_ids = tokenizer.encode(context, add_special_tokens=False).ids if context else []
    return context_ids or [eos], tokenizer.encode(continuation, add_special_tokens=False).ids


def total(logprobs: torch.Tensor, positions: list[int], targets: list[int]) -> tuple[float, bool]:
    rows = logprobs[positions]
    return float(rows[range(len(targets)), targets].double().sum()), bool((rows.argmax(-1) == torch.tensor(targets)).all())


def reference_decoder(model, ids_context, ids_continuation, prefix: bool) -> tuple[float, bool]:
    ids = (ids_context + ids_continuation)[-(MAX_LEN + 1) :]
    n_context = len(ids) - len(ids_continuation)
    x = torch.tensor([ids[:-1]])
    if prefix:
        hidden = model.body(x, mask=masks.prefix(x.shape[1], torch.tensor([n_context])))
    else:
        hidden = model.body(x, is_causal=True)
    logprobs = model.head(hidden)[0].float().log_softmax(-1)
    return total(logprobs, [n_context - 1 + k for k in range(len(ids_continuation))], ids_continuation)


def is_word_char(ch: str) -> bool:
    return ch.isalnum() or ord(ch) >= 0x80


def reference_word_ends(tokenizer, ids: list[int]) -> list[int]:
    """Written again from the definition, on decoded text: a token continues the word
    when it starts with a letter/digit and the token before it ends with one (or is
    a bare space)."""
    texts = [tokenizer.decode([i]) for i in ids]

    def joins(text: str) -> bool:
        return is_word_char(text[-1]) or set(text) == {" "}

    starts = [i == 0 or not (is_word_char(t[0]) and joins(texts[i - 1])) for i, t in enumerate(texts)]
    ends = []
    for i in range(len(ids)):
        j = i
        while j + 1 < len(ids) and not starts[j + 1]:
            j += 1
        ends.append(j)
    return ends


def reference_encoder(model, tokenizer, ids_context, ids_continuation, word_l2r: bool) -> tuple[float, bool]:
    """Brute force: one forward per continuation token, that token (and, for word-l2r,
    the rest of its word) replaced by [MASK]."""
    mask_id = Specials.from_tokenizer(tokenizer).mask
    sequence = ids_context[-(MAX_LEN - len(ids_continuation)) :] + ids_continuation
    start = len(sequence) - len(ids_continuation)
    ends = reference_word_ends(tokenizer, ids_continuation) if word_l2r else list(range(len(ids_continuation)))
    logprob, greedy = 0.0, True
    for k, token in enumerate(ids_continuation):
        row = list(sequence)
        for j in range(k, ends[k] + 1):
            row[start + j] = mask_id
        logits, _ = model({"input_ids": torch.tensor([row])})
        scores = logits[0, start + k].float().log_softmax(-1)
        logprob += float(scores[token])
        greedy = greedy and int(scores.argmax()) == token
    return logprob, greedy


def reference_encoder_decoder(model, tokenizer, ids_context, ids_continuation, fmt: str) -> tuple[float, bool]:
    specials = Specials.from_tokenizer(tokenizer)
    if fmt == "t5_sentinel":  # T5: `context <extra_id_0> <eos>` -> `<extra_id_0> continuation`
        encoder = ids_context[-(MAX_LEN - 2) :] + [specials.sentinels[0], specials.eos]
        start = [specials.bos, specials.sentinels[0]]
    else:
        encoder, start = ids_context[-MAX_LEN:], [specials.bos]
    decoder = start + ids_continuation[:-1]
    logits, _ = model({"input_ids": torch.tensor([encoder]), "decoder_input_ids": torch.tensor([decoder])})
    logprobs = logits[0].float().log_softmax(-1)
    return total(logprobs, [len(start) - 1 + k for k in range(len(ids_continuation))], ids_continuation)


def reference_glm(model, tokenizer, ids_context, ids_continuation, fmt: str) -> tuple[float, bool]:
    """GLM's Part A (context + [MASK]) and Part B ([sop] + continuation) with 2D positions."""
    specials = Specials.from_tokenizer(tokenizer)
    blank = specials.gmask if fmt == "gmask" else specials.mask
    part_a = ids_context[-(MAX_LEN - 2) :] + [blank]  # Part A stays inside max_len (no trained lengths here)
    part_b = [specials.sop] + ids_continuation[:-1]
    mask_position = len(part_a) - 1
    batch = {
        "input_ids": torch.tensor([part_a + part_b]),
        "position_ids": torch.tensor([list(range(len(part_a))) + [mask_position] * len(part_b)]),
        "block_position_ids": torch.tensor([[0] * len(part_a) + list(range(1, len(part_b) + 1))]),
        "part_a_len": torch.tensor([len(part_a)]),
    }
    logits, _ = model(batch)
    logprobs = logits[0].float().log_softmax(-1)
    return total(logprobs, [len(part_a) + k for k in range(len(ids_continuation))], ids_continuation)


BLANK_FORMATS = ("t5_sentinel", "mask", "gmask", "sentinel")  # the blank alone is the prompt of an empty context


def reference(model, arch, scorer, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    ids_context, ids_continuation = encode_pair(tokenizer, context, continuation)
    if scorer.format in BLANK_FORMATS and not context.rstrip():
        ids_context = []  # T5's encoder reads `<extra_id_0> <eos>`, GLM's Part A is `[MASK]`
    name = arch["family"]
    with torch.no_grad():
        if name == "decoder":
            return reference_decoder(model, ids_context, ids_continuation, prefix=scorer.format == "prefix_lm")
        if name == "encoder":
            return reference_encoder(model, tokenizer, ids_context, ids_continuation, scorer.format == "pll_word_l2r")
        if name == "encoder_decoder":
            return reference_encoder_decoder(model, tokenizer, ids_context, ids_continuation, scorer.format)
        return reference_glm(model, tokenizer, ids_context, ids_continuation, scorer.format)


# --- the tests ---


@pytest.mark.parametrize("name,fmt", VARIANTS)
def test_loglikelihood_matches_unbatched_reference(name, fmt, tokenizer):
    model, arch, scorer = model_and_scorer(name, fmt, tokenizer)
    pairs = requests()
    got = scorer.loglikelihood(pairs, 16)
    for (context, continuation), (logprob, greedy) in zip(pairs, got):
        want_logprob, want_greedy = reference(model, arch, scorer, tokenizer, context, continuation)
        assert logprob == pytest.approx(want_logprob, abs=TOLERANCE), (context, continuation)
        assert greedy == want_greedy


@pytest.mark.parametrize("name,fmt", VARIANTS)
def test_batch_size_does_not_change_scores(name, fmt, tokenizer):
    _, _, scorer = model_and_scorer(name, fmt, tokenizer)
    pairs = requests()
    one, sixteen = scorer.loglikelihood(pairs, 1), scorer.loglikelihood(pairs, 16)
    for (a, greedy_a), (b, greedy_b) in zip(one, sixteen):
        assert a == pytest.approx(b, abs=TOLERANCE) and greedy_a == greedy_b
    rng = random.Random(2)
    texts = [tiny_text(rng, 5), "The queen forgot a letter.", tiny_text(rng, 2)]
    for a, b in zip(scorer.loglikelihood_rolling(texts, 1), scorer.loglikelihood_rolling(texts, 16)):
        assert a == pytest.approx(b, abs=TOLERANCE)


@pytest.mark.parametrize("name", PRESETS)
def test_rolling_of_a_short_text_is_its_loglikelihood_after_eos(name, tokenizer):
    """A text that fits one window is scored once, after the empty context (<eos>; in a
    blank format, the blank alone); a span-infilling family predicts it `span` tokens at
    a time, each piece after the text before it, scored here one request at a time."""
    _, _, scorer = model_and_scorer(name, None, tokenizer)
    text = "The old king remembered a field of barley, at last."
    ids = scorer.encode(text)
    if scorer.span is None:
        [(logprob, _)] = scorer.loglikelihood([("", text)], 4)
    else:
        assert len(ids) > scorer.span  # the text is cut into several pieces
        empty = [] if scorer.format in BLANK_FORMATS else [scorer.specials.eos]
        pieces = [(ids[:start] or empty, ids[start : start + scorer.span]) for start in range(0, len(ids), scorer.span)]
        logprob = sum(scorer.score_tokens([piece], 1)[0][0] for piece in pieces)
    assert scorer.loglikelihood_rolling([text], 4)[0] == pytest.approx(logprob, abs=TOLERANCE)


@pytest.mark.parametrize("name,fmt,expected", [
    ("gpt", None, None), ("prefix_lm", None, None), ("bert", None, None),
    ("t5", None, ROLLING_SPAN), ("t5", "plain", None), ("glm", None, ROLLING_SPAN), ("glm", "gmask", None),
])  # fmt: skip
def test_span_infilling_formats_score_running_text_in_short_spans(name, fmt, expected, tokenizer):
    _, _, scorer = model_and_scorer(name, fmt, tokenizer)
    assert scorer.span == expected and scorer.settings["span"] == expected  # part of the request cache key


def test_span_zero_keeps_whole_windows(tokenizer):
    model, arch, _ = model_and_scorer("t5", None, tokenizer)
    whole = family("encoder_decoder").scorer(model, tokenizer, arch, span=0)
    text = "The old king remembered a field of barley, at last."
    [(logprob, _)] = whole.loglikelihood([("", text)], 4)
    assert whole.span is None and whole.loglikelihood_rolling([text], 4)[0] == pytest.approx(logprob, abs=TOLERANCE)


@pytest.mark.parametrize("window,span", [(8, 3), (64, 8), (5, 1), (6, 6)])
def test_span_windows_score_every_token_once(window, span):
    ids = list(range(100, 140))
    pieces = span_windows(ids, prefix=2, window=window, span=span)
    assert [t for _, predicted in pieces for t in predicted] == ids
    cursor = 0
    for context, predicted in pieces:
        assert 1 <= len(predicted) <= min(span, window - 1) and len(context) + len(predicted) <= window
        assert context == (ids[max(0, cursor - len(context)) : cursor] if cursor else [2])  # the tokens right before
        assert len(context) == (min(cursor, window - min(span, window - 1)) if cursor else 1)  # as much as fits
        cursor += len(predicted)


@pytest.mark.parametrize("window,stride", [(8, 8), (8, 3), (64, 32), (5, 1)])
def test_rolling_windows_score_every_token_once(window, stride):
    ids = list(range(100, 140))
    windows = rolling_windows(ids, prefix=2, window=window, stride=stride)
    assert [t for _, predicted in windows for t in predicted] == ids
    stream = [2] + ids
    cursor = 0
    for context, predicted in windows:
        assert len(context) + len(predicted) <= window + 1
        assert stream[cursor + 1 - len(context) : cursor + 1] == context  # the tokens right before
        if cursor:  # after the first window: window - stride + 1 tokens of context or more
            assert len(context) >= window - stride + 1
        cursor += len(predicted)


def test_word_groups_for_pll_word_l2r(tokenizer):
    starts, ends = word_byte_tables(tokenizer)
    text = " barley, the weary traveller's horses, 1999 cafés\nat last."
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert word_ends(ids, starts, ends) == reference_word_ends(tokenizer, ids)
    words = [tokenizer.decode(ids[i : j + 1]) for i, j in enumerate(word_ends(ids, starts, ends))
             if i == 0 or word_ends(ids, starts, ends)[i - 1] != j]
    assert words == [" barley", ",", " the", " weary", " traveller", "'", "s", " horses", ",", " 1999", " cafés", "\n", "at", " last", "."]


def test_word_l2r_masks_the_rest_of_a_multi_token_word(tokenizer):
    """PLL-word-l2r differs from plain PLL exactly when a word has several tokens."""
    _, _, word_l2r = model_and_scorer("bert", None, tokenizer)
    _, _, plain = model_and_scorer("bert", "pll", tokenizer)
    starts, ends = word_byte_tables(tokenizer)
    words = [" the", " zyxwvut"]  # common (one token) and made up (many tokens)
    counts = [len(tokenizer.encode(w, add_special_tokens=False).ids) for w in words]
    assert counts[0] == 1 and counts[1] > 2
    ids = tokenizer.encode(words[1], add_special_tokens=False).ids
    assert word_ends(ids, starts, ends) == [len(ids) - 1] * len(ids)
    pairs = [("The old king", w) for w in words]
    a, b = word_l2r.loglikelihood(pairs, 4), plain.loglikelihood(pairs, 4)
    assert a[0][0] == pytest.approx(b[0][0], abs=TOLERANCE)
    assert abs(a[1][0] - b[1][0]) > 20 * TOLERANCE  # an untrained model barely conditions: small but real


def one_token_scores(scorer, context_ids: list[int], vocab: int) -> torch.Tensor:
    """log P(t | context) for every token t: no family's input depends on the one
    token scored, so the argmax here is the greedy token."""
    scores = scorer.score_tokens([(context_ids, [t]) for t in range(vocab)], 128)
    return torch.tensor([s for s, _ in scores])


@pytest.mark.parametrize("name", PRESETS)
def test_is_greedy_on_a_greedy_and_a_non_greedy_continuation(name, tokenizer):
    _, arch, scorer = model_and_scorer(name, None, tokenizer)
    context = tokenizer.encode("The old king walked through the", add_special_tokens=False).ids
    scores = one_token_scores(scorer, context, tokenizer.get_vocab_size())
    best, second, worst = [int(i) for i in scores.argsort(descending=True)[[0, 1, -1]]]
    results = scorer.score_tokens([(context, [best]), (context, [second]), (context, [worst])], 3)
    assert [greedy for _, greedy in results] == [True, False, False]
    if arch["family"] == "decoder":  # two greedy steps are greedy; a wrong second token is not
        after = one_token_scores(scorer, context + [best], tokenizer.get_vocab_size())
        next_best, next_worst = int(after.argmax()), int(after.argmin())
        results = scorer.score_tokens([(context, [best, next_best]), (context, [best, next_worst])], 2)
        assert [greedy for _, greedy in results] == [True, False]


# --- generation: KV-cached, left-padded batches against a naive full-forward loop ---


def naive_generate(model, arch, scorer, tokenizer, context: str, max_tokens: int) -> str:
    specials = Specials.from_tokenizer(tokenizer)
    ids = tokenizer.encode(context, add_special_tokens=False).ids or [specials.eos]
    out: list[int] = []
    name = arch["family"]
    for _ in range(max_tokens):
        if name == "decoder":
            x = torch.tensor([ids + out])
            if scorer.format == "prefix_lm":
                logits, _ = model({"input_ids": x, "prefix_len": torch.tensor([len(ids)])})
            else:
                logits, _ = model({"input_ids": x})
            stops = {specials.eos}
        elif name == "encoder_decoder":
            start = [specials.bos, specials.sentinels[0]] if scorer.format == "t5_sentinel" else [specials.bos]
            encoder = ids + ([specials.sentinels[0], specials.eos] if scorer.format == "t5_sentinel" else [])
            logits, _ = model({"input_ids": torch.tensor([encoder]), "decoder_input_ids": torch.tensor([start + out])})
            stops = {specials.eos} | (set(specials.sentinels) if scorer.format == "t5_sentinel" else set())
        else:
            part_a = ids + [specials.gmask if scorer.format == "gmask" else specials.mask]
            part_b = [specials.sop] + out
            logits, _ = model({
                "input_ids": torch.tensor([part_a + part_b]),
                "position_ids": torch.tensor([list(range(len(part_a))) + [len(part_a) - 1] * len(part_b)]),
                "block_position_ids": torch.tensor([[0] * len(part_a) + list(range(1, len(part_b) + 1))]),
                "part_a_len": torch.tensor([len(part_a)]),
            })
            stops = {specials.eos, specials.eop}
        token = int(logits[0, -1].argmax())
        if token in stops:
            break
        out.append(token)
    return tokenizer.decode(out, skip_special_tokens=True)


GENERATORS = [(n, None) for n in PRESETS if composed(n)[0]["family"] != "encoder"] + [("t5", "plain"), ("glm", "gmask")]


@pytest.mark.parametrize("name,fmt", GENERATORS)
def test_generate_matches_a_naive_loop(name, fmt, tokenizer):
    model, arch, scorer = model_and_scorer(name, fmt, tokenizer)
    contexts = ["The old king", "A young sailor spoke of the winter sea and", "", "Her brother"]
    got = scorer.generate(contexts, [[] for _ in contexts], 6)
    with torch.no_grad():
        want = [naive_generate(model, arch, scorer, tokenizer, c, 6) for c in contexts]
    assert got == want


def test_generate_stops_at_until_strings(tokenizer):
    _, _, scorer = model_and_scorer("gpt", None, tokenizer)
    [free] = scorer.generate(["The old king"], [[]], 8)
    assert len(free) >= 3
    stop = free[1:3]
    [cut] = scorer.generate(["The old king"], [[stop]], 8)
    assert cut == free.split(stop)[0]


def test_encoders_do_not_generate(tokenizer):
    _, _, scorer = model_and_scorer("bert", None, tokenizer)
    with pytest.raises(NotImplementedError, match="encoder models do not generate"):
        scorer.generate(["The old king"], [["\n"]], 4)
    assert issubclass(UnsupportedRequest, UserError)


@pytest.mark.parametrize("name", PRESETS)
def test_probe_runs_a_full_length_batch(name, tokenizer):
    """What `batch_size=auto` runs (on a GPU, halving on out-of-memory)."""
    _, _, scorer = model_and_scorer(name, None, tokenizer)
    scorer.probe(2)
    [(logprob, _)] = scorer.score_tokens([scorer.probe_pair()], 1)  # it fits max_len
    assert logprob < 0


def test_bad_options_and_oversized_continuations_fail_clearly(tokenizer):
    model, arch, _ = model_and_scorer("gpt", None, tokenizer)
    spec = family("decoder")
    with pytest.raises(UserError, match="choose one of: causal, prefix_lm, sentinel"):
        spec.scorer(model, tokenizer, arch, format="t5_sentinel")
    with pytest.raises(UserError, match="needs a non-causal decoder"):
        spec.scorer(model, tokenizer, arch, format="prefix_lm")
    with pytest.raises(UserError, match="unknown decoder scorer option 'fromat'"):
        spec.scorer(model, tokenizer, arch, fromat="causal")
    t5, t5_arch, _ = model_and_scorer("t5", None, tokenizer)
    with pytest.raises(UserError, match="span=-1 must be a number of tokens >= 1"):
        family("encoder_decoder").scorer(t5, tokenizer, t5_arch, span=-1)
    # formats that read the continuation left to right refuse one longer than the input
    for name, fmt in (("gpt", None), ("bert", None), ("t5", "plain")):
        _, _, scorer = model_and_scorer(name, fmt, tokenizer)
        with pytest.raises(UserError, match="does not fit the 64-token (input|target) this .* model was trained on"):
            scorer.loglikelihood([("The", " king" * 70)], 2)
    # blank-filling formats score it as successive blanks, each inside the trained lengths
    for name in ("t5", "glm"):
        _, _, scorer = model_and_scorer(name, None, tokenizer)
        (logprob, _), = scorer.loglikelihood([("The", " king" * 70)], 2)
        assert logprob < 0
