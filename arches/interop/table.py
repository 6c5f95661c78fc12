"""Which transformers class each preset maps onto, and why the others have none.

The README's "Import and export" table is checked against these (tests/test_interop.py),
so a preset added to sweeps/arch/ without a line here fails a test until it is decided.
"""

from __future__ import annotations

from arches.families.glm import NO_TRANSFORMERS
from arches.interop.decoders import (
    bloom_config,
    bloom_knobs,
    bloom_links,
    gpt2_config,
    gpt2_knobs,
    gpt2_links,
    llama_config,
    llama_knobs,
    llama_links,
    neox_config,
    neox_knobs,
    neox_links,
    opt_config,
    opt_knobs,
    opt_links,
)
from arches.interop.encoders import bert_config, bert_knobs, bert_links, t5_config, t5_knobs, t5_links
from arches.interop.mapping import Architecture
from arches.interop.parallel import (
    falcon_config,
    falcon_knobs,
    falcon_links,
    gptj_config,
    gptj_fold,
    gptj_knobs,
    gptj_links,
)

CAUSAL, MASKED, SEQ2SEQ = "AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSeq2SeqLM"

ARCHITECTURES: dict[str, Architecture] = {
    a.hf_class: a
    for a in (
        Architecture("GPT2LMHeadModel", "gpt2", CAUSAL, "gpt", "decoder", gpt2_knobs, gpt2_config, gpt2_links),
        Architecture("OPTForCausalLM", "opt", CAUSAL, "opt", "decoder", opt_knobs, opt_config, opt_links),
        Architecture("GPTNeoXForCausalLM", "gpt_neox", CAUSAL, "neox", "decoder", neox_knobs, neox_config, neox_links,
                     legacy_names=((r"^embed_out\.", "lm_head."),)),
        Architecture("BloomForCausalLM", "bloom", CAUSAL, "bloom", "decoder", bloom_knobs, bloom_config, bloom_links),
        Architecture("LlamaForCausalLM", "llama", CAUSAL, "llama", "decoder", llama_knobs, llama_config, llama_links),
        Architecture("GPTJForCausalLM", "gptj", CAUSAL, "gptj", "decoder", gptj_knobs, gptj_config, gptj_links, fold=gptj_fold),
        Architecture("FalconForCausalLM", "falcon", CAUSAL, "falcon", "decoder", falcon_knobs, falcon_config, falcon_links),
        Architecture("BertForMaskedLM", "bert", MASKED, "bert", "encoder", bert_knobs, bert_config, bert_links),
        Architecture("T5ForConditionalGeneration", "t5", SEQ2SEQ, "t5", "encoder_decoder", t5_knobs, t5_config, t5_links),
    )
}
BY_MODEL_TYPE = {a.model_type: a for a in ARCHITECTURES.values()}  # a config.json without `architectures`
BY_PRESET = {a.preset: a for a in ARCHITECTURES.values()}

# presets that no transformers class computes, and why (checked against transformers 5.x)
NO_EQUIVALENT = {
    "prefix_lm": (
        "transformers has no decoder with bidirectional attention over a prefix (every *ForCausalLM "
        "masks causally throughout, so it would compute other logits)"
    ),
    "glm": NO_TRANSFORMERS,  # the glm family's (FamilySpec.no_transformers)
}


def supported() -> str:
    """The transformers classes import-hf reads."""
    return ", ".join(sorted(ARCHITECTURES))


def exportable() -> str:
    """The presets export-hf writes."""
    return ", ".join(sorted(BY_PRESET))
