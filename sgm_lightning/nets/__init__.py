"""Score networks (NCSN++ / DDPM++, NCSNv2) and the adapter to ``score_fn(x, t)``."""

from .build import build_network
from .ncsnpp import NCSNpp
from .presets import PRESETS
from .wrapper import noise_labels, output_to_score, score_fn_from_net

__all__ = ["NCSNpp", "PRESETS", "build_network", "noise_labels", "output_to_score", "score_fn_from_net"]
