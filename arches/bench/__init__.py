"""Training and scoring throughput of each preset against its transformers equivalent
(issue #8). `arches bench` itself, with lm-eval's end-to-end comparison, the table
and the JSON, lives in `harness/bench.py`; this package is the model side.

A training step is forward, backward and AdamW on one fixed batch that the family's
own collate builds from seeded random token ids. It is timed after warm-up with the
device synchronized. MFU divides the FLOPs that `torch.utils.flop_counter` counts on
one eager step by the step time and a peak: configured, or measured by a matmul
microbenchmark in the step's dtype. The transformers model gets the same batch and
our weights (through `arches.interop`), so at fp32 its first loss equals ours: the
two columns time the same function.

    settings   `bench.*` checked and resolved for this machine (Settings, Shape)
    synthetic  seeded synthetic text, its tokenizer, the multiple-choice set, random windows
    measure    timing a training step: synchronize, autocast, peak memory, counted FLOPs, matmul peak
    twin       the transformers model and batch that compute what ours does
    preset     one preset: its model, batch, training step, twin's step and scorer
    run        benchmark(): every preset, its baseline and the ratio
"""
