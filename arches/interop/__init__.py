"""Interoperability with HF transformers: published checkpoints in, our runs out.

    arches import-hf <model folder or hub name> [--preset P] [tokenizer=<path>] [results_dir=...] [run_name=...]
    arches export-hf <run folder> <out folder> [--as <transformers class>]

`import_hf` turns a transformers checkpoint into a run folder of this harness
(checkpoint, model.json, the model's own tokenizer.json, config.yaml, run.json),
which `arches eval` and the reports then treat like any trained run; `export_hf`
writes a run back as a folder that `AutoModelFor{CausalLM,MaskedLM,Seq2SeqLM}
.from_pretrained` loads with the same logits.

One `Architecture` per supported transformers class holds the whole mapping: its
config -> our `ModelConfig` knobs (`knobs`), the reverse (`hf_config`), and the
tensor links between the two state dicts (`links`, see `mapping`). Where
transformers computes something our shared transformer does not, the difference is
folded into the weights instead of adding a knob (T5's unscaled attention, BERT's
token-type embedding, OPT's two unused position rows, GPT-J's interleaved rotary
pairs and single norm). `table` says which preset maps onto which class, and why
prefix_lm and glm map onto none.

Modules: `mapping` (links and moving tensors), `decoders` (GPT-2, OPT, GPT-NeoX,
BLOOM, LLaMA), `parallel` (GPT-J, Falcon), `encoders` (BERT, T5), `table`,
`checkpoint` (folder, weights, tokenizer), `commands` (import, export, CLI).

The imported tokenizer does not carry arches' special tokens; the tokens that
play their roles (pad, bos, eos, mask, sentinels) are recorded in the
checkpoint's `arch.special_tokens`, which the scorers read
(`arches.data.tokenizer.Specials.from_tokenizer`), and run.json says
`tokenizer_kind: hf`.

transformers is an optional extra (`pip install arches[interop]`); nothing else
in the harness imports it.
"""

from arches.interop.commands import export_command, export_hf, import_command, import_hf
from arches.interop.mapping import Architecture, Link, UnsupportedOption, export_weights, import_weights
from arches.interop.table import ARCHITECTURES, BY_MODEL_TYPE, BY_PRESET, NO_EQUIVALENT, exportable, supported

__all__ = [
    "ARCHITECTURES", "BY_MODEL_TYPE", "BY_PRESET", "NO_EQUIVALENT", "Architecture", "Link", "UnsupportedOption",
    "export_command", "export_hf", "export_weights", "exportable", "import_command", "import_hf", "import_weights",
    "supported",
]
