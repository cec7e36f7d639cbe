"""Score networks (NCSN++ / DDPM++, NCSNv2) and the adapter to ``score_fn(x, t)``."""

from .build import build_network
from .convert import from_score_sde
from .ncsnpp import NCSNpp
from .ncsnv2 import NCSNv2
from .presets import PRESETS
from .wrapper import noise_labels, output_to_score, score_fn_from_net

__all__ = ["NCSNpp", "NCSNv2", "PRESETS", "build_network", "from_score_sde", "noise_labels", "output_to_score",
           "score_fn_from_net"]
