"""arches: compare transformer language-model architectures and objectives fairly."""

__version__ = "0.1.0"
