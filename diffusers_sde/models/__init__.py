"""Networks of the score_sde paper as diffusers models, and the converter of its checkpoints."""

from .conversion import convert_checkpoint
from .ncsnpp import NCSNppModel, NCSNppOutput
from .stock_layout import to_unet2d_model

__all__ = ["NCSNppModel", "NCSNppOutput", "convert_checkpoint", "to_unet2d_model"]
