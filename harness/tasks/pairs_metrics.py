"""The minimal-pair tasks' scoring rule: a tie is not a win.

lm-eval's multiple-choice `acc` takes `argmax` of the choices' log-likelihoods,
which picks the first of equal values, so a tie counts as correct whenever the
gold choice comes first, as it always does in BLiMP's format (BabyLM's evaluation
issue #34 shows this inflating accuracy). Here a tie scores half and is counted
on its own. lm-eval imports this file by its path, from the YAMLs beside it, so it
imports nothing from arches.
"""

from __future__ import annotations


def process_results(doc: dict, results: list) -> dict:
    """`results`: one (loglikelihood, is_greedy) per choice, [good, bad]. acc: 1 when good
    is more likely, 0.5 on an exact tie, 0 otherwise; tie: 1 on an exact tie."""
    (good, _), (bad, _) = results
    tie = good == bad
    return {"acc": 0.5 if tie else float(good > bad), "tie": float(tie)}
