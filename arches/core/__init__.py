"""The one shared transformer: config, attention, masks, positions, block, stack."""

from arches.core.config import ModelConfig
from arches.core.spec import FamilySpec
from arches.core.stack import LMHead, Transformer

__all__ = ["FamilySpec", "LMHead", "ModelConfig", "Transformer"]
