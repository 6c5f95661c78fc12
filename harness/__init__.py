"""arches' evaluation and comparison side: lm-eval adapter, tasks, store, reports."""
