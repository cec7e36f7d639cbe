"""``build_network(arch, **kwargs)``: one entry point for every score network by name."""

from __future__ import annotations

from torch import nn

ARCHS = ("ncsnpp", "ncsnv2", "mlp")


def build_network(arch: str, **kwargs) -> nn.Module:
    """Build ``arch`` in {"ncsnpp", "ncsnv2", "mlp"} with its keyword options.

    Unknown architectures or options raise ``ValueError`` naming them (each class checks its own).
    """
    if arch == "ncsnpp":
        from .ncsnpp import NCSNpp

        return NCSNpp(**kwargs)
    if arch == "ncsnv2":
        from .ncsnv2 import NCSNv2

        return NCSNv2(**kwargs)
    if arch == "mlp":
        import inspect

        from .mlp import ScoreMLP  # written by the training issue; imported lazily

        params = inspect.signature(ScoreMLP).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                raise ValueError(f"mlp: unknown option(s) {unknown}; valid options: {sorted(params)}")
        return ScoreMLP(**kwargs)
    raise ValueError(f"arch: unknown architecture {arch!r}; use one of {list(ARCHS)}")
