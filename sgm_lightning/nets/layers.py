"""Building blocks of NCSN++ / DDPM++ (score_sde ``layers.py`` / ``layerspp.py``).

Initialisation follows score_sde (DDPM's ``variance_scaling(scale, 'fan_avg', 'uniform')``, zero
biases, ``init_scale = 0`` -> 1e-10) so freshly built networks start where the official ones do.
Names here are our own; :mod:`.convert` maps the official flat names onto them.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from . import fir

#: score_sde ``nonlinearity`` names -> activation modules
ACTIVATIONS = {"swish": nn.SiLU, "silu": nn.SiLU, "elu": nn.ELU, "relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(0.2)}


def make_activation(name: str) -> nn.Module:
    if name.lower() not in ACTIVATIONS:
        raise ValueError(f"nonlinearity: unknown value {name!r}; use one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name.lower()]()


@torch.no_grad()
def default_init_(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """DDPM init: U(-a, a), a = sqrt(3 scale / fan_avg), fan_avg = (fan_in + fan_out) / 2."""
    scale = 1e-10 if scale == 0 else scale
    receptive = weight[0, 0].numel() if weight.ndim > 2 else 1
    fan_avg = (weight.shape[0] + weight.shape[1]) * receptive / 2
    return weight.uniform_(-1.0, 1.0).mul_(math.sqrt(3 * scale / fan_avg))


#: Winograd (NNPACK) for the forward and the input gradient of a 3x3 'same' convolution on CPU from
#: this batch, pixel count and width (input and output channels) on: 1.2-1.6x faster than oneDNN's
#: direct convolution at batch 16 on 32x32 / 16x16 maps of 128-512 channels; slower on 8x8 maps,
#: at batch 4 and for narrow layers (16 channels: 0.94x; 1 -> 16 and 16 -> 1 made the digits
#: training step 1.2x slower) (docs/performance.md)
WINOGRAD_MIN_BATCH, WINOGRAD_MIN_PIXELS, WINOGRAD_MIN_CHANNELS = 16, 256, 64
#: our Winograd weight gradient (:func:`conv3x3_weight_grad`) from this width on, at any batch:
#: 1.2-2.2x faster than oneDNN's at 128-512 channels on 16x16 / 32x32 maps, batch 1-16; 0.95x at 64,
#: 0.2-0.45x at 16-32 channels
WINOGRAD_WEIGHT_MIN_CHANNELS = 128
#: the tile of grad that one Winograd weight-gradient product covers (F(3x3, 4x4), 6x6 input tiles)
WINOGRAD_WEIGHT_TILE = 4


@functools.cache
def _nnpack() -> bool:
    return torch.backends.nnpack.is_available()  # also initialises NNPACK, which its convolution needs


def _winograd_allowed(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """float32 NCHW on CPU, with Winograd switched on (NNPACK's flag) and no autocast / compile."""
    return (not torch.compiler.is_compiling()  # first: dynamo cannot trace the flag queries below
            and x.device.type == "cpu" and x.dtype == torch.float32 and x.ndim == 4 and x.is_contiguous()
            and weight.dtype == x.dtype and torch._C._get_nnpack_enabled() and not torch.is_autocast_enabled("cpu")
            and _nnpack())


def winograd_chosen(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`conv3x3` of ``x`` with ``weight`` runs NNPACK's Winograd (the rule in its docstring)."""
    return (_winograd_allowed(x, weight) and x.shape[0] >= WINOGRAD_MIN_BATCH
            and x.shape[2] * x.shape[3] >= WINOGRAD_MIN_PIXELS and min(weight.shape[:2]) >= WINOGRAD_MIN_CHANNELS)


def winograd_weight_grad_chosen(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Where :func:`conv3x3_weight_grad` measured faster than oneDNN's weight gradient: maps of at
    least 256 pixels with sides a multiple of 4, at least 128 channels in and out, except batches
    of 16 or more on maps of 1024 pixels or more with more input than output channels (there the
    2.25x larger transformed input costs more than it saves: 0.93-0.98x at 256 -> 128 on 32x32, while
    batch 8 measured 1.61x), docs/performance.md."""
    if not _winograd_allowed(x, weight):
        return False
    b, h, w = x.shape[0], x.shape[2], x.shape[3]
    return (h * w >= WINOGRAD_MIN_PIXELS and h % WINOGRAD_WEIGHT_TILE == 0 and w % WINOGRAD_WEIGHT_TILE == 0
            and min(weight.shape[:2]) >= WINOGRAD_WEIGHT_MIN_CHANNELS
            and not (b >= WINOGRAD_MIN_BATCH and h * w >= 1024 and weight.shape[1] > weight.shape[0]))


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, training: bool = True) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for a 3x3 ``weight``; Winograd for wide CPU layers.

    NNPACK's Winograd F(6x6, 3x3) runs the forward and the input gradient for float32 NCHW
    batches of at least :data:`WINOGRAD_MIN_BATCH` images of :data:`WINOGRAD_MIN_PIXELS` pixels,
    with at least :data:`WINOGRAD_MIN_CHANNELS` input and output channels (relative error ~1e-5
    against float64, oneDNN's ~3e-6; fixed per shape, so runs stay reproducible); our
    F(3x3, 4x4) the weight gradient where :func:`winograd_weight_grad_chosen` says so
    (:func:`conv3x3_backward`); oneDNN the rest. ``torch.backends.nnpack.flags(enabled=False)``,
    autocast or ``torch.compile`` turn every Winograd path off. ``training=False`` (a module in eval
    mode: likelihoods, guidance) keeps PyTorch's own backward, which computes only the gradients
    asked for (``autograd.grad(out, x)`` then skips the weight gradient).
    """
    forward = winograd_chosen(x, weight)
    if (training and torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
            and (forward or winograd_weight_grad_chosen(x, weight))):
        return _Conv3x3.apply(x, weight, bias, forward)
    if forward:
        return torch._nnpack_spatial_convolution(x, weight, bias, [1, 1])
    return F.conv2d(x, weight, bias, padding=1)


def conv3x3_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need: tuple[bool, bool, bool]):
    """Gradients of ``F.conv2d(x, weight, bias, padding=1)`` for 3x3 ``weight``: (input, weight, bias).

    The input gradient is the 'same' convolution of ``grad`` with the kernel flipped and its
    channels swapped, so it runs NNPACK's Winograd where :func:`winograd_chosen` says so for that
    convolution; the weight gradient runs :func:`conv3x3_weight_grad` where
    :func:`winograd_weight_grad_chosen` says so; the rest is oneDNN's ``convolution_backward``.
    """
    grad = grad.contiguous()  # autograd may hand over an expanded or strided gradient
    g_x = g_w = g_b = None
    flipped = weight.transpose(0, 1)
    if need[0] and winograd_chosen(grad, flipped):
        g_x = torch._nnpack_spatial_convolution(grad, flipped.flip(2, 3).contiguous(), None, [1, 1])
        need = (False, need[1], need[2])
    if need[1] and winograd_weight_grad_chosen(x, weight):
        g_w = conv3x3_weight_grad(grad, x)
        g_b = grad.sum((0, 2, 3)) if need[2] else None
        need = (need[0], False, False)
    if any(need):
        g = torch.ops.aten.convolution_backward(grad, x, weight, [weight.shape[0]], [1, 1], [1, 1], [1, 1], False,
                                                [0, 0], 1, list(need))
        g_x, g_w, g_b = (a if a is not None else b for a, b in zip((g_x, g_w, g_b), g))
    return g_x, g_w, g_b


@functools.cache
def _toom_cook_3(m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Winograd's F(3, m) (Lavin & Gray 2016): 3 outputs of an m-tap correlation from a = m + 2
    inputs, y = A^T ((G g) * (B^T d)), built by Toom-Cook at the points 0, +-1, +-2, ... and infinity.

    A^T and G are the Vandermonde rows of the points (G divided by each point's Lagrange
    denominator); B^T is then the unique solution of the bilinear identity, solved in float64.
    Returned as 2-D transforms (Kronecker squares) in float32: A^T (9, a^2), G (a^2, m^2), B^T (a^2, a^2).
    """
    a = m + 2
    pts = torch.tensor([0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5][:a - 1], dtype=torch.float64)
    at = torch.zeros(3, a, dtype=torch.float64)
    at[:, :-1] = pts ** torch.arange(3.0)[:, None]
    at[-1, -1] = 1.0
    denom = torch.stack([torch.prod(torch.cat([p - pts[:j], p - pts[j + 1:]])) for j, p in enumerate(pts)])
    g = torch.zeros(a, m, dtype=torch.float64)
    g[:-1] = pts[:, None] ** torch.arange(float(m)) / denom[:, None]
    g[-1, -1] = 1.0
    # sum_j A^T[i, j] G[j, k] B^T[j, l] = [l == i + k] for every output i, tap k and input l
    lhs = (at[:, None, :] * g.T[None, :, :]).reshape(3 * m, a)
    rhs = torch.zeros(3, m, a, dtype=torch.float64)
    for i in range(3):
        for k in range(m):
            rhs[i, k, i + k] = 1.0
    bt = torch.linalg.lstsq(lhs, rhs.reshape(3 * m, a)).solution
    assert float((lhs @ bt - rhs.reshape(3 * m, a)).abs().max()) < 1e-9
    return tuple(torch.kron(t, t).float() for t in (at, g, bt))


def conv3x3_weight_grad(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``dL/dweight`` ``(C_out, C_in, 3, 3)`` of ``F.conv2d(x, weight, padding=1)`` from ``grad = dL/dout``.

    Each weight tap is the correlation of the padded input with ``grad``. Over 4x4 tiles of
    ``grad`` and the 6x6 input tiles under them, Winograd's F(3x3, 4x4) turns it into 36 matrix
    products (C_out, tiles) @ (tiles, C_in), summed over the batch: a quarter of the direct
    multiplications, plus transforms that cost 2.25x the input and gradient in memory traffic.
    Contiguous NCHW, sides a multiple of 4; relative error ~1e-5 against float64 (oneDNN's ~5e-6).
    """
    b, c_in, h, w = x.shape
    c_out, m = grad.shape[1], WINOGRAD_WEIGHT_TILE
    a, ty, tx = m + 2, h // m, w // m
    at, g_t, bt = (t.to(x.device) for t in _toom_cook_3(m))
    xp = F.pad(x, (1, 1, 1, 1)).contiguous()
    hp, wp = h + 2, w + 2
    tiles = xp.as_strided((a, a, c_in, b, ty, tx), (wp, 1, hp * wp, c_in * hp * wp, m * wp, m))  # 6x6, stride 4
    x_hat = torch.mm(bt, tiles.reshape(a * a, -1)).view(a * a, c_in, -1)
    g_tiles = grad.view(b, c_out, ty, m, tx, m).permute(3, 5, 1, 0, 2, 4).reshape(m * m, -1)
    g_hat = torch.mm(g_t, g_tiles).view(a * a, c_out, -1)
    w_hat = torch.bmm(g_hat, x_hat.transpose(1, 2))  # (a^2, C_out, C_in)
    return torch.mm(at, w_hat.view(a * a, -1)).view(3, 3, c_out, c_in).permute(2, 3, 0, 1).contiguous()


class _Conv3x3(torch.autograd.Function):
    """3x3 'same' convolution (NNPACK's Winograd when ``winograd``) whose backward is :func:`conv3x3_backward`."""

    @staticmethod
    def forward(ctx, x, weight, bias, winograd: bool):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        if winograd:
            return torch._nnpack_spatial_convolution(x, weight, bias, [1, 1])
        return F.conv2d(x, weight, bias, padding=1)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        return *conv3x3_backward(grad, x, weight, (need[0], need[1], need[2] and ctx.has_bias)), None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose 3x3 stride-1 'same' case runs :func:`conv3x3`; same parameters and keys."""

    def _conv_forward(self, x, weight, bias):
        if (self.kernel_size == (3, 3) and self.stride == (1, 1) and self.padding == (1, 1)
                and self.dilation == (1, 1) and self.groups == 1 and self.padding_mode == "zeros"):
            return conv3x3(x, weight, bias, self.training)
        return super()._conv_forward(x, weight, bias)


def conv(in_ch: int, out_ch: int, kernel: int = 3, *, stride: int = 1, padding: int | None = None,
         bias: bool = True, init_scale: float = 1.0) -> nn.Conv2d:
    """Conv2d with DDPM initialisation (score_sde ``ddpm_conv3x3`` / ``ddpm_conv1x1``)."""
    layer = Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2 if padding is None else padding,
                   bias=bias)
    default_init_(layer.weight, init_scale)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` for a 1x1 ``weight`` ``(C_out, C_in, 1, 1)``, as one matmul on CPU.

    PyTorch runs a CPU 1x1 convolution as one GEMM per image (``_slow_conv2d``); a batched matmul
    (NCHW) or a single matmul over the pixels (channels_last, a view) is up to 2x faster forward
    and no slower backward. Other devices keep the convolution (cuDNN handles 1x1 well).
    """
    if x.device.type != "cpu" or x.ndim != 4:
        return F.conv2d(x, weight, bias)
    b, c, h, w = x.shape
    w2 = weight.view(weight.shape[0], c)
    if x.is_contiguous():
        out = torch.matmul(w2, x.view(b, c, h * w)) if bias is None else \
            torch.baddbmm(bias.view(1, -1, 1), w2.expand(b, *w2.shape), x.view(b, c, h * w))
        return out.view(b, -1, h, w)
    return F.linear(x.permute(0, 2, 3, 1), w2, bias).permute(0, 3, 1, 2)


def dense(in_dim: int, out_dim: int) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim)
    default_init_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def group_norm(channels: int) -> nn.GroupNorm:
    """score_sde's GroupNorm: min(C // 4, 32) groups, eps 1e-6."""
    return nn.GroupNorm(min(channels // 4, 32), channels, eps=1e-6)


def skip_sum(x: torch.Tensor, h: torch.Tensor, rescale: bool) -> torch.Tensor:
    """Residual sum, divided by sqrt(2) when ``skip_rescale`` (NCSN++, Song et al. 2021, App. H)."""
    return torch.add(x, h).div_(math.sqrt(2.0)) if rescale else x + h  # in place: one buffer, same bits


class GaussianFourierProjection(nn.Module):
    """Random Fourier features [sin 2 pi W s, cos 2 pi W s] of s = log sigma, W ~ N(0, scale^2) fixed.

    ``W`` is a buffer (official: a parameter with ``requires_grad=False``), so optimisers and EMA
    never see it. Input ``(B,)`` -> output ``(B, 2 * embedding_size)``.
    """

    def __init__(self, embedding_size: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("W", torch.randn(embedding_size) * scale)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        # left-to-right as the official code: reordering moves arguments of ~500 rad by ~3e-5
        proj = s[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def timestep_embedding(labels: torch.Tensor, dim: int, max_positions: float = 10_000.0) -> torch.Tensor:
    """DDPM sinusoidal embedding ``(B,) -> (B, dim)`` (Vaswani et al.; score_sde's convention).

    Frequencies exp(-log(max_positions) i / (dim/2 - 1)); computed in float32 as the official code
    (float64 when the labels are float64).
    """
    dtype = torch.float64 if labels.dtype == torch.float64 else torch.float32
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=dtype, device=labels.device) * -(math.log(max_positions) / (half - 1)))
    emb = labels.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 == 1 else emb


class Resample(nn.Module):
    """Stand-alone up/down-sampling by 2 (score_sde ``layerspp.Upsample`` / ``Downsample``).

    ``fir=True`` uses the FIR filter (with a fused 3x3 conv when ``with_conv``); otherwise nearest
    / 2x2-mean resampling (an optional plain 3x3 conv after up-sampling, or a strided 3x3 conv
    with TF 'SAME'-style (0, 1) padding for down-sampling). ``(B, in_ch, H, W) -> (B, out_ch, 2H|H/2, ...)``.
    """

    def __init__(self, in_ch: int, out_ch: int | None = None, *, up: bool, with_conv: bool,
                 fir_kernel: list[float] | None):
        super().__init__()
        out_ch = out_ch or in_ch
        if not with_conv and out_ch != in_ch:
            raise ValueError("Resample: changing channels needs with_conv=True")
        self.up, self.with_conv, self.fir = up, with_conv, fir_kernel is not None
        if self.fir:
            self.register_buffer("kernel", fir.make_kernel(fir_kernel, gain=4.0 if up else 1.0), persistent=False)
        if with_conv:
            # with FIR, only the weight (C_out, C_in, 3, 3) and bias are used (fused in fir.*_conv*)
            strided = not up and not self.fir
            self.conv = conv(in_ch, out_ch, 3, stride=2 if strided else 1, padding=0 if strided else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fir:
            if not self.with_conv:
                return fir.upsample(x, self.kernel) if self.up else fir.downsample(x, self.kernel)
            op = fir.upsample_conv if self.up else fir.conv_downsample
            return op(x, self.conv.weight, self.kernel) + self.conv.bias[None, :, None, None]
        if self.up:
            x = fir.naive_upsample(x)
            return self.conv(x) if self.with_conv else x
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return fir.naive_downsample(x)


class Combine(nn.Module):
    """Merge a 1x1-projected pyramid image into the features: 'sum' or channel 'cat' (layerspp.Combine)."""

    def __init__(self, in_ch: int, out_ch: int, method: str):
        super().__init__()
        self.proj = conv(in_ch, out_ch, 1)
        self.method = method

    def forward(self, pyramid: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        p = conv1x1(pyramid, self.proj.weight, self.proj.bias)
        return torch.cat([p, h], dim=1) if self.method == "cat" else p + h
