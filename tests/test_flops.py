"""Each family's analytic `flops_per_token` against what torch's flop counter measures
on the forward pass of real training batches, for every preset, every variant an
experiment defines, and GLM's [gMASK] mixes.

`torch.utils.flop_counter` counts matmuls (2 FLOPs a multiply-add) and SDPA as the
whole of QK^T and AV, whatever the mask: the convention of `arches.core.flops`. So
the two agree to float rounding where an objective's counts are fixed (full LM, MLM,
span corruption), and in expectation where they are random (a prefix split, GLM's
span count or [gMASK] span): there the mean over many windows must be within
`STANDARD_ERRORS` standard errors of the analytic count, and that bound itself
under `MAX_TOLERANCE`, so the test stays sharp. Each window is its own batch, so no
padding is counted: the analytic count is per example (see `arches.core.flops`).
A measurement without attention FLOPs fails with its cause (the counter lacks the
SDPA kernel this torch runs on a CPU), not as a mere mismatch.
A forward's matmul FLOPs depend only on its tensors' shapes and on how many
positions are labelled (where the head takes only those), so each such shape is
measured once and every window of that shape counts it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SEQ_LEN, SPECIALS, sections, windows
from torch.utils.flop_counter import FlopCounterMode

from arches import registry
from arches.bench.measure import _cpu_attention_formulas
from arches.config import group_choices
from arches.core.flops import TRAINING_MULTIPLIER
from arches.core.stack import IGNORE_INDEX
from arches.families.glm import sample_spans, span_count_probabilities
from harness.compare import plan

VOCAB = 512  # windows hold ordinary tokens only (conftest.windows), as a corpus window mostly does
FIXED_WINDOWS = 3
# 4000 windows put 4 standard errors at 0.3-0.8% of the mean here, while the counts
# this test replaced were 2-44% off (ED prefix LM's (L/2)² the least)
RANDOM_WINDOWS = 4000
STANDARD_ERRORS = 4.0
MAX_TOLERANCE = 0.03


def _experiment_cases() -> dict[str, list[str]]:
    """Every experiment variant that is more than a bare preset, as `experiment/variant`,
    with the overrides `arches compare` trains it with."""
    cases: dict[str, list[str]] = {}
    seen: set[tuple[str, ...]] = set()
    for name in group_choices("experiment"):
        _, runs, _ = plan([f"experiment={name}"])
        for run in runs:
            arch_overrides = tuple(o for o in run.overrides if o.lstrip("+").startswith("arch"))
            if len(arch_overrides) > 1 and arch_overrides not in seen:
                seen.add(arch_overrides)
                cases[f"{name}/{run.variant}"] = run.overrides
    return cases


CASES = {
    **{preset: [f"arch={preset}"] for preset in group_choices("arch")},
    **_experiment_cases(),
    # blank infilling alone, GLM's 50/50 multi-task mix, and [gMASK] alone (Du et al. 2022 §2.3.2)
    **{f"glm/gmask_ratio={ratio}": ["arch=glm", f"arch.gmask_ratio={ratio}"] for ratio in (0.0, 0.5, 1.0)},
}


def composed(case: str) -> tuple[dict, dict]:
    return sections(*CASES[case], "size=debug")


def is_random(arch: dict) -> bool:
    """Whether the objective's per-window counts are random (a split point, GLM's spans)."""
    return arch["family"] == "glm" or arch.get("objective") == "prefix_lm"


def shape_of(batch: dict) -> tuple:
    """What a training forward's matmul FLOPs depend on."""
    labelled = int((batch["labels"] != IGNORE_INDEX).sum())
    return tuple((key, tuple(value.shape)) for key, value in sorted(batch.items())), labelled


def measured_forward_flops(model: torch.nn.Module, batch: dict) -> tuple[int, int]:
    """(all forward FLOPs, attention FLOPs) of one training forward, as torch counts them
    (with the CPU flash-attention kernel, which torch's table lacks, counted as the others)."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas()) as counter:
        model(batch)
    by_op = counter.get_flop_counts().get("Global", {})
    # SDPA, or its math fallback's bmm
    attention = sum(count for op, count in by_op.items() if "scaled_dot_product" in str(op) or "bmm" in str(op))
    return counter.get_total_flops(), attention


@pytest.mark.parametrize("case", list(CASES))
def test_flops_per_token_counts_what_the_forward_computes(case: str) -> None:
    arch, size = composed(case)
    spec = registry.family(arch["family"])
    cfg = registry.model_config(arch, size, VOCAB, SEQ_LEN)
    torch.manual_seed(0)
    model = spec.build(cfg, arch).eval()
    collate = spec.collate(arch, SPECIALS, SEQ_LEN, seed=0, vocab_size=VOCAB)
    by_shape: dict[tuple, int] = {}
    per_window = []
    for window in windows(RANDOM_WINDOWS if is_random(arch) else FIXED_WINDOWS, vocab=VOCAB):
        batch = collate([window])
        shape = shape_of(batch)
        if shape not in by_shape:
            total, attention = measured_forward_flops(model, batch)
            assert attention > 0, (
                f"{case}: torch's flop counter saw no attention FLOPs; the SDPA kernel this torch runs on a CPU "
                "is missing from its table (see arches.bench.measure._cpu_attention_formulas)"
            )
            by_shape[shape] = total
        per_window.append(TRAINING_MULTIPLIER * by_shape[shape] / SEQ_LEN)
    measured = np.array(per_window)
    analytic = spec.flops_per_token(cfg, arch, SEQ_LEN)
    if is_random(arch):
        standard_error = measured.std(ddof=1) / math.sqrt(len(measured))
        tolerance = STANDARD_ERRORS * standard_error / measured.mean()
        assert tolerance < MAX_TOLERANCE, f"{case}: {len(measured)} windows are too few for a sharp test"
    else:
        assert measured.min() == measured.max(), f"{case}: a fixed objective cost {sorted(set(per_window))}"
        tolerance = 1e-6
    assert analytic == pytest.approx(measured.mean(), rel=tolerance), (
        f"{case}: flops_per_token={analytic:,.0f}, measured {measured.mean():,.0f} per window token "
        f"({analytic / measured.mean() - 1:+.2%})"
    )


# the last: a budget that leaves too few kept tokens between the spans, so sample_spans merges some
@pytest.mark.parametrize(
    "length, mask_rate, poisson_lambda", [(64, 0.15, 3.0), (256, 0.15, 3.0), (40, 0.5, 1.5), (12, 0.75, 1.0)]
)
def test_glm_span_count_probabilities_match_sample_spans(length: int, mask_rate: float, poisson_lambda: float) -> None:
    """The exact distribution of GLM's span count against sample_spans' own draws: every
    count's frequency within 4 binomial standard errors (plus 0.1%, for counts too rare
    for that bound)."""
    probabilities = span_count_probabilities(length, mask_rate, poisson_lambda)
    assert probabilities.sum() == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    draws = 20_000
    counts = np.bincount([len(sample_spans(rng, length, mask_rate, poisson_lambda)) for _ in range(draws)],
                         minlength=len(probabilities))
    assert len(counts) == len(probabilities), "sample_spans made more spans than the budget allows"
    frequencies = counts / draws
    bound = 4 * np.sqrt(probabilities * (1 - probabilities) / draws) + 1e-3
    assert (np.abs(frequencies - probabilities) <= bound).all(), (frequencies.round(4), probabilities.round(4))
