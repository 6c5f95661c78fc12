"""BIG-bench tasks as local lm-eval tasks, offline: the archive fetched once (archive), each
task converted to YAML + jsonl (convert), their folder and `arches data bigbench` (command)."""
