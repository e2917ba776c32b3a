"""Networks of the score_sde paper as diffusers models, and the converter of its checkpoints."""

from .ncsnpp import NCSNppModel, NCSNppOutput

__all__ = ["NCSNppModel", "NCSNppOutput"]
