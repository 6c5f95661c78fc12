"""Bundled offline lm-eval tasks (YAML + loaders)."""
