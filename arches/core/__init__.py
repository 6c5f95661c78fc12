"""The one shared transformer: config, attention, masks, positions, block, stack, flops."""

from arches.core.config import ModelConfig
from arches.core.stack import LMHead, Transformer

__all__ = ["LMHead", "ModelConfig", "Transformer"]
