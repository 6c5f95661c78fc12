"""The lm-eval side of a run: `ArchesLM`, registered with lm-eval as `--model arches` when
harness.lm.model is imported (model), its request cache (cache) and `arches lm-eval` (command).

Imports nothing itself: lm-eval and torch load with harness.lm.model only.
"""
