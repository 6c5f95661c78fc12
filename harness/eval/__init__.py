"""`arches eval`: a run scored by lm-eval, the scores written into its folder.

command (evaluate(cfg) and the table), settings (the checked `eval` section, the run folder
and its corpus), tasks (which tasks run, found and checked), records (what one
simple_evaluate leaves), alternatives (the other scoring format's pass), generations (the
greedy samples) and pairs (the minimal pairs' preparation). Imports nothing heavy itself.
"""
