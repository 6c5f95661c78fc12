"""The families: each file exports one `SPEC` (arches.families.spec.FamilySpec) bundling a
model, its objective, its FLOPs, its scorer and the facts the workflows read about it
(likelihood kind, transformers twin, special tokens, bench shape, scoring formats).

Shared by the families: `spec`, `objective` (`ArchConfig`, the preset's `arch` section
typed, each objective setting's default once), `scoring` (the lm-eval Scorer contract and
its helpers) and `noise` (T5's span noise and batch padding). The table of families is
`arches.registry.FAMILIES`; nothing is imported here, so naming a family costs nothing.
"""
