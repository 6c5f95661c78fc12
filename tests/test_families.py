"""Every family and preset end to end: each preset at `debug` size builds, collates,
runs forward and backward with a finite loss near ln(vocab) and steps an optimizer;
the accounting (parameters, FLOPs, input_len) holds; the encoder-decoder is sized as
T5 §3.2.2 says; one preset per family overfits a small repeated text; and bad
configurations fail with one line that names the key.

Presets come from `sweeps/arch/*.yaml` through the Hydra compose API and families
from `arches.registry.FAMILIES`, so a new preset or family is tested here without
a new test.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import PRESETS, SEQ_LEN, SPECIALS, VOCAB, Preset, composed, windows

from arches import registry
from arches.config import group_choices
from arches.core.config import ModelConfig
from arches.core.stack import IGNORE_INDEX, parameter_counts
from arches.errors import UserError

SIZES = group_choices("size")


def test_the_tables_are_not_empty() -> None:
    assert {"gpt", "prefix_lm", "bert", "t5", "glm"} <= set(PRESETS)
    assert "debug" in SIZES
    families = {composed(preset)[0]["family"] for preset in PRESETS}
    assert families == set(registry.FAMILIES), "every family has a preset and every preset a family"


# --------------------------------------------------------------------------- every preset at debug size


def test_preset_trains_a_step_at_debug_size(preset: Preset) -> None:
    arch, size = preset.arch, preset.size
    spec = registry.family(arch["family"])
    cfg = registry.model_config(arch, size, VOCAB, SEQ_LEN)
    torch.manual_seed(0)
    model = spec.build(cfg, arch)
    collate = spec.collate(arch, SPECIALS, SEQ_LEN, seed=0, vocab_size=VOCAB)
    batch = collate(windows(2, index=False))
    assert (batch["labels"] != IGNORE_INDEX).any()
    logits, loss = model(batch)
    assert logits.shape[-1] == VOCAB
    assert torch.isfinite(loss)
    assert abs(loss.item() - math.log(VOCAB)) < 0.3, "a fresh model predicts close to uniform"
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
        assert parameter.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(3):
        optimizer.step()
        optimizer.zero_grad()
        _, loss = model(collate(windows(2, seed=step + 1, index=False)))
        assert torch.isfinite(loss)
        loss.backward()


def test_preset_accounting(preset: Preset) -> None:
    arch, size = preset.arch, preset.size
    spec = registry.family(arch["family"])
    cfg = registry.model_config(arch, size, VOCAB, SEQ_LEN)
    counts = parameter_counts(spec.build(cfg, arch))
    assert 0 < counts["non_embedding"] < counts["total"]
    assert spec.flops_per_token(cfg, arch, SEQ_LEN) > 0


def test_input_len_covers_what_the_model_sees(preset: Preset) -> None:
    arch = preset.arch
    spec = registry.family(arch["family"])
    needed = 0
    for seed in range(10):
        batch = spec.collate(arch, SPECIALS, SEQ_LEN, seed=seed, vocab_size=VOCAB)(windows(4, seed=seed, index=False))
        if "position_ids" in batch:  # GLM: the positions index the tables, not the sequence
            needed = max(needed, int(batch["position_ids"].max()) + 1, int(batch["block_position_ids"].max()) + 1)
        else:
            for key in ("input_ids", "decoder_input_ids"):
                if key in batch:
                    needed = max(needed, batch[key].shape[1])
    assert needed <= spec.input_len(arch, SEQ_LEN)


def test_max_len_shorter_than_the_window_is_refused(preset: Preset) -> None:
    arch, size = preset.arch, preset.size
    needed = registry.family(arch["family"]).input_len(arch, SEQ_LEN)
    registry.model_config(arch, dict(size, max_len=needed), VOCAB, SEQ_LEN)
    with pytest.raises(UserError, match="max_len") as error:
        registry.model_config(arch, dict(size, max_len=needed - 1), VOCAB, SEQ_LEN)
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------- T5 §3.2.2 sizing

ENCODER_DECODER_PRESETS = [p for p in PRESETS if composed(p)[0]["family"] == "encoder_decoder"]


@pytest.mark.parametrize("size_name", SIZES)
@pytest.mark.parametrize("preset", ENCODER_DECODER_PRESETS)
def test_encoder_decoder_has_twice_the_parameters_at_the_same_flops(preset: str, size_name: str) -> None:
    arch, size = composed(preset, size_name)
    # the decoder it is compared with has the same knobs, so only the structure differs
    decoder_arch = {"name": "decoder", "family": "decoder", "objective": "lm", "model": arch["model"]}
    encoder_decoder_cfg = registry.model_config(arch, size, VOCAB)
    decoder_cfg = registry.model_config(decoder_arch, size, VOCAB)
    with torch.device("meta"):
        encoder_decoder = parameter_counts(registry.family("encoder_decoder").build(encoder_decoder_cfg, arch))
        decoder = parameter_counts(registry.family("decoder").build(decoder_cfg, decoder_arch))
    assert 1.6 <= encoder_decoder["non_embedding"] / decoder["non_embedding"] <= 2.4
    # FLOPs per window token at the default window. With a small vocabulary, so the
    # LM head (which the decoder runs on every token and T5 only on its short
    # targets) does not swamp the stack at debug size.
    seq_len = 256
    ratio = registry.family("encoder_decoder").flops_per_token(encoder_decoder_cfg, arch, seq_len) / registry.family(
        "decoder"
    ).flops_per_token(decoder_cfg, decoder_arch, seq_len)
    assert 1 / 1.5 <= ratio <= 1.5


# --------------------------------------------------------------------------- overfit

# each family's reference preset (and the prefix LM besides); a family with none of them overfits its first preset
KNOWN_PRESETS = ("gpt", "prefix_lm", "bert", "t5", "glm")
OVERFIT_PRESETS = KNOWN_PRESETS + tuple(
    next(p for p in PRESETS if composed(p)[0]["family"] == name)
    for name in registry.FAMILIES
    if not any(composed(p)[0]["family"] == name for p in KNOWN_PRESETS)
)


def test_overfit_covers_every_family() -> None:
    assert {composed(p)[0]["family"] for p in OVERFIT_PRESETS} == set(registry.FAMILIES)


@pytest.mark.parametrize("preset", OVERFIT_PRESETS)
def test_family_overfits_a_repeated_text(preset: str) -> None:
    """Proves the objective, the masks and the loss are wired together: a model
    trained on one batch (four corruptions of one 32-token text) must drive its loss
    well down. (With a fresh corruption every step T5 and GLM need a few hundred
    steps at this size, as they must learn to look the missing spans up in context.)"""
    arch, size = composed(preset)
    size = dict(size, d_model=64, n_layers=2, n_heads=4, max_len=64)
    spec = registry.family(arch["family"])
    torch.manual_seed(0)
    model = spec.build(registry.model_config(arch, size, VOCAB, SEQ_LEN), arch)
    batch = spec.collate(arch, SPECIALS, SEQ_LEN, seed=0, vocab_size=VOCAB)(windows(1, index=False) * 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(150):
        _, loss = model(batch)
        losses.append(loss.item())
        if losses[-1] < 0.3 * losses[0]:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.3 * losses[0], f"{preset}: loss {losses[0]:.2f} -> {losses[-1]:.2f} in {len(losses)} steps"


# --------------------------------------------------------------------------- bad configurations


def one_line_error(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, "errors are one line"
    return message


@pytest.mark.parametrize(
    "values, key",
    [
        (dict(d_model=32, n_heads=5), "n_heads"),
        (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"),
        (dict(n_heads=4, n_kv_heads=0), "n_kv_heads"),
        (dict(rotary_pct=0.0), "rotary_pct"),
        (dict(rotary_pct=1.5), "rotary_pct"),
        (dict(rotary_pct=-0.5), "rotary_pct"),
        (dict(d_model=32, n_heads=4, position="rope", rotary_pct=0.1), "rotary_pct"),  # rotates 0 of 8 dims
        (dict(dropout=1.0), "dropout"),
        (dict(n_layers=0), "n_layers"),
        (dict(norm="batchnorm"), "norm"),
        (dict(norm_placement="middle"), "norm_placement"),
    ],
)
def test_model_config_rejects_impossible_values(values: dict, key: str) -> None:
    with pytest.raises(UserError) as error:
        ModelConfig(vocab_size=VOCAB, **values)
    assert f"model.{key}=" in one_line_error(error)


@pytest.mark.parametrize(
    "key, value, suggestion",
    [("activation", "gelux", "gelu"), ("position", "rop", "rope"), ("norm", "rmsnom", "rmsnorm")],
)
def test_model_config_lists_choices_and_suggests_the_closest(key: str, value: str, suggestion: str) -> None:
    with pytest.raises(UserError) as error:
        ModelConfig(vocab_size=VOCAB, **{key: value})
    message = one_line_error(error)
    assert f"model.{key}={value!r}" in message
    assert f"Did you mean '{suggestion}'?" in message
    if key == "activation":
        assert all(name in message for name in ("gelu", "relu", "swiglu", "geglu"))


def test_model_config_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(UserError) as error:
        ModelConfig.from_dict({"vocab_size": VOCAB, "d_modle": 64})
    message = one_line_error(error)
    assert "'d_modle'" in message and "Did you mean 'd_model'?" in message
    assert ModelConfig.from_dict(ModelConfig(vocab_size=VOCAB).to_dict()) == ModelConfig(vocab_size=VOCAB)


def test_model_config_derives_sizes() -> None:
    cfg = ModelConfig(vocab_size=VOCAB, d_model=64, n_heads=4)
    assert (cfg.n_kv_heads, cfg.d_ff, cfg.head_dim) == (4, 256, 16)
    gated = ModelConfig(vocab_size=VOCAB, d_model=64, n_heads=4, activation="swiglu")
    assert gated.d_ff % 8 == 0 and abs(gated.d_ff - 2 * 256 / 3) < 8  # Shazeer 2020: 2/3 of 4d


def test_registry_family_suggests_the_closest() -> None:
    with pytest.raises(UserError) as error:
        registry.family("decodr")
    message = one_line_error(error)
    assert "Did you mean 'decoder'?" in message
    assert all(name in message for name in registry.FAMILIES)


@pytest.mark.parametrize("family", sorted(registry.FAMILIES))
def test_every_family_spec_is_named_after_its_entry(family: str) -> None:
    spec = registry.family(family)
    assert spec.name == family
    assert spec.objectives and spec.positions


def test_glm_positions_on_a_decoder_are_refused() -> None:
    arch, size = composed("gpt")
    arch = dict(arch, model=dict(arch["model"], position="glm2d"))
    with pytest.raises(UserError) as error:
        registry.model_config(arch, size, VOCAB, SEQ_LEN)
    assert "model.position=glm2d" in one_line_error(error)


@pytest.mark.parametrize("position", ["learned", "rope", "alibi", "none"])
def test_other_positions_on_glm_are_refused(position: str) -> None:
    arch, size = composed("glm")
    arch = dict(arch, model=dict(arch["model"], position=position))
    with pytest.raises(UserError) as error:
        registry.model_config(arch, size, VOCAB, SEQ_LEN)
    assert f"model.position={position}" in one_line_error(error)


@pytest.mark.parametrize(
    "preset, change, key",
    [
        ("gpt", dict(objective="mlm"), "arch.objective"),
        ("bert", dict(objective="lm"), "arch.objective"),
        ("gpt", dict(prefix_lm=True), "arch.prefix_lm"),  # full LM has no prefix
        ("t5", dict(prefix_lm=True), "arch.prefix_lm"),
        ("glm", dict(prefix_lm=True), "arch.prefix_lm"),
        ("glm", dict(gmask_ratio=1.5), "arch.gmask_ratio"),
        ("bert", dict(mask_rate=0.0), "arch.mask_rate"),
    ],
)
def test_meaningless_objective_settings_are_refused(preset: str, change: dict, key: str) -> None:
    arch, size = composed(preset)
    arch = dict(arch, **change)
    spec = registry.family(arch["family"])
    position = arch["model"]["position"]
    cfg = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=4, max_len=64, position=position)
    with pytest.raises(UserError) as error:
        spec.build(cfg, arch)
    assert key in one_line_error(error)
    with pytest.raises(UserError):
        spec.collate(arch, SPECIALS, SEQ_LEN, seed=0, vocab_size=VOCAB)
