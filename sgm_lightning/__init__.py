"""sgm-lightning: score-based generative modeling on PyTorch Lightning."""

__version__ = "0.1.0"
