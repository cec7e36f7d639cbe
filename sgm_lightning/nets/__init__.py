"""Score networks (NCSN++ / DDPM++, NCSNv2) and the adapter to ``score_fn(x, t)``."""

from .wrapper import noise_labels, output_to_score, score_fn_from_net

__all__ = ["noise_labels", "output_to_score", "score_fn_from_net"]
