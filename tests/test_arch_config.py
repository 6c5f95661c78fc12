"""The preset's `arch` section typed (arches.families.objective.ArchConfig): each default
written once, ranges and unknown keys refused in one line, the family's objective and rule."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import SPECIALS, composed, windows
from omegaconf import OmegaConf

from arches import registry
from arches.errors import UserError
from arches.families.objective import ArchConfig

DEFAULTS = {f.name: f.default for f in dataclasses.fields(ArchConfig) if f.default is not dataclasses.MISSING}


def test_every_shipped_preset_parses(preset) -> None:
    settings = ArchConfig.of(preset.arch)
    assert (settings.name, settings.family) == (preset.name, preset.arch["family"])
    assert settings.objective == preset.arch["objective"] in registry.family(settings.family).objectives
    for key, value in preset.arch.items():  # every key the preset sets is read as it is written
        assert getattr(settings, key) == value
    assert ArchConfig.of(OmegaConf.create(preset.arch)) == settings  # a DictConfig reads the same


def test_a_preset_without_a_setting_gets_the_one_default() -> None:
    arch, _ = composed("bert")
    del arch["mask_rate"]
    assert ArchConfig.of(arch).mask_rate == DEFAULTS["mask_rate"] == 0.15
    # the objective draws what it draws with the default written out
    spec, batch = registry.family("encoder"), windows(4)
    implicit = spec.collate(arch, SPECIALS, 32, seed=1, vocab_size=300)(batch)
    explicit = spec.collate({**arch, "mask_rate": 0.15}, SPECIALS, 32, seed=1, vocab_size=300)(batch)
    assert all((implicit[key] == explicit[key]).all() for key in explicit)
    t5, _ = composed("t5")
    bare = {"family": "encoder_decoder"}
    assert registry.family("encoder_decoder").trained_lengths(bare, 64) == registry.family("encoder_decoder").trained_lengths(t5, 64)


@pytest.mark.parametrize("family", list(registry.FAMILIES))
def test_the_default_objective_is_the_family_s_first(family: str) -> None:
    assert ArchConfig.of({"family": family}).objective == registry.family(family).objectives[0]


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ({"family": "encoder", "mask_rate": 1.0}, "arch.mask_rate=1.0 must be in (0, 1)"),
        ({"family": "glm", "gmask_ratio": 1.5}, "arch.gmask_ratio=1.5 must be in [0, 1]"),
        ({"family": "encoder_decoder", "mean_span_length": 0}, "arch.mean_span_length=0 must be positive (T5: 3)"),
        ({"family": "glm", "poisson_lambda": -1.0}, "arch.poisson_lambda=-1.0 must be at least 0 (GLM: 3)"),
        ({"family": "decoder", "noise_density": "high"}, "arch.noise_density='high' must be a number"),
        ({"family": "decoder", "document_mask": "yes"}, "arch.document_mask='yes' must be true or false"),
        ({"family": "encoder", "objective": "lm"}, "arch.objective='lm' is not an encoder objective; choose one of: mlm"),
        ({"family": "glm", "objective": "lm"}, "arch.objective='lm' is not a glm objective; choose one of: blank_infilling"),
        ({"family": "decoder", "prefix_lm": True}, "arch.prefix_lm=true with arch.objective=lm means nothing"),
        ({"family": "glm", "prefix_lm": True}, "arch.prefix_lm applies to decoders; GLM's Part A is always bidirectional"),
        ({"family": "decoder", "mask_rat": 0.2}, "unknown arch key 'mask_rat'; valid: name, family, objective, "),
        ({"family": "decoder", "mask_rat": 0.2}, "Did you mean 'mask_rate'?"),
        ({"family": "decodr"}, "unknown family 'decodr'; valid: decoder, encoder, encoder_decoder, glm. Did you mean"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(arch: dict, message: str) -> None:
    with pytest.raises(UserError) as error:
        ArchConfig.of(arch)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_model_config_checks_the_arch_section() -> None:
    arch, size = composed("gpt")
    with pytest.raises(UserError, match="unknown arch key 'prefix_ml'.*Did you mean 'prefix_lm'"):
        registry.model_config({**arch, "prefix_ml": True}, size, 300)
    with pytest.raises(UserError, match="arch.prefix_lm=true with arch.objective=lm means nothing"):
        registry.model_config({**arch, "prefix_lm": True}, size, 300)


def test_a_family_may_declare_keys_of_its_own() -> None:
    # the fifth family's `tail` (tests/test_fifth_family.py) is no key of the four shipped ones
    with pytest.raises(UserError, match="unknown arch key 'tail'"):
        ArchConfig.of({"family": "decoder", "tail": 0.5})
