"""NCSN++ / DDPM++: the noise-conditional U-Net of Song et al. 2021 (score_sde ``models/ncsnpp.py``).

One class covers both: NCSN++ (VE: Fourier embedding of log sigma, FIR resampling, BigGAN blocks,
``progressive_input='residual'``, output divided by sigma) and DDPM++ (VP: positional embedding
of 999 t, no FIR). The network is a tree of modules — ``embed``, ``conv_in``, ``down[i]``
(:class:`DownLevel`), ``mid``, ``up[j]`` (:class:`UpLevel`), ``head`` — that mirrors the U-Net,
instead of score_sde's flat module list walked by an index counter; :mod:`.convert` maps official
checkpoints onto it (``official_modules`` lists our modules in the official construction order).

Call: ``net(x, labels)`` with ``x`` ``(B, C, H, W)`` (in [0, 1] unless ``centered``) and labels
``(B,)``: sigma for the Fourier embedding, 999 t (VP) or the level index (VE discrete) for the
positional one. Returns ``(B, C, H, W)``; with ``scale_by_sigma`` the output is divided by sigma.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import AttnBlock
from .layers import Combine, GaussianFourierProjection, Resample, conv, dense, group_norm, make_activation, \
    skip_sum, timestep_embedding
from .ncsnpp_config import validate_ncsnpp
from .norm_act import norm_act, recompute_enabled
from .resblocks import ResBlock

#: ``memory_format="auto"``: channels_last per device type, where measured faster (docs/performance.md)
AUTO_CHANNELS_LAST: dict[str, bool] = {"cpu": False, "cuda": False}


class DownLevel(nn.Module):
    """One encoder resolution: ``num_res_blocks`` ResBlocks (+ attention), then down-sampling
    (none at the last level) merged with the input pyramid (``progressive_input``)."""

    def __init__(self, blocks: list[ResBlock], attns: list[AttnBlock], downsample: nn.Module | None,
                 pyramid: nn.Module | None, progressive_input: str, skip_rescale: bool):
        super().__init__()
        self.blocks, self.attns = nn.ModuleList(blocks), nn.ModuleList(attns)  # attns: one per block, or none
        self.downsample, self.pyramid = downsample, pyramid
        self.progressive_input, self.skip_rescale = progressive_input, skip_rescale

    def forward(self, h, temb, pyramid_img):
        """Returns the list of skip activations (to be popped by the decoder), h and the pyramid."""
        skips = []
        for i, block in enumerate(self.blocks):
            h = block(h, temb)
            if len(self.attns):
                h = self.attns[i](h)
            skips.append(h)
        if self.downsample is None:
            return skips, h, pyramid_img
        h = self.downsample(h, temb) if isinstance(self.downsample, ResBlock) else self.downsample(h)
        if self.progressive_input == "input_skip":
            pyramid_img = self.pyramid.resample(pyramid_img)
            h = self.pyramid.combine(pyramid_img, h)
        elif self.progressive_input == "residual":
            pyramid_img = skip_sum(self.pyramid(pyramid_img), h, self.skip_rescale)
            h = pyramid_img
        skips.append(h)
        return skips, h, pyramid_img

    def official_order(self) -> list[nn.Module]:
        mods: list[nn.Module] = []
        for i, block in enumerate(self.blocks):
            mods += [block] + ([self.attns[i]] if len(self.attns) else [])
        if self.downsample is not None:
            mods.append(self.downsample)
            if self.progressive_input == "input_skip":
                mods += [self.pyramid.resample, self.pyramid.combine]
            elif self.progressive_input == "residual":
                mods.append(self.pyramid)
        return mods


class UpLevel(nn.Module):
    """One decoder resolution: ``num_res_blocks + 1`` ResBlocks on [h, skip] (+ one attention),
    the output pyramid (``progressive``), then up-sampling (none at the top level)."""

    def __init__(self, blocks: list[nn.Module], attn: nn.Module | None, pyramid: nn.ModuleDict | None,
                 upsample: nn.Module | None, progressive: str, skip_rescale: bool, act: nn.Module,
                 recompute_norm_act: bool | str = "auto"):
        super().__init__()
        self.recompute_norm_act = recompute_norm_act
        self.blocks, self.attn, self.pyramid, self.upsample = nn.ModuleList(blocks), attn, pyramid, upsample
        self.progressive, self.skip_rescale, self.act = progressive, skip_rescale, act

    def forward(self, h, temb, skips: list[torch.Tensor], pyramid):
        """``skips``: this level's encoder activations, consumed last-first (not mutated, so
        activation checkpointing can replay the call)."""
        for block, skip in zip(self.blocks, reversed(skips)):
            h = block(torch.cat([h, skip], dim=1), temb)
        if self.attn is not None:
            h = self.attn(h)
        if self.pyramid is not None:
            p = self.pyramid
            lean = recompute_enabled(self.recompute_norm_act, h)
            if self.progressive == "output_skip":
                out = p.conv(norm_act(p.norm, self.act, h, lean))
                pyramid = out if pyramid is None else p.resample(pyramid) + out
            elif pyramid is None:  # 'residual', lowest resolution
                pyramid = p.conv(norm_act(p.norm, self.act, h, lean))
            else:
                pyramid = skip_sum(p.resample(pyramid), h, self.skip_rescale)
                h = pyramid
        if self.upsample is not None:
            h = self.upsample(h, temb) if isinstance(self.upsample, ResBlock) else self.upsample(h)
        return h, pyramid

    def official_order(self) -> list[nn.Module]:
        mods = list(self.blocks) + ([self.attn] if self.attn is not None else [])
        if self.pyramid is not None:
            mods += [self.pyramid[k] for k in ("resample", "norm", "conv") if k in self.pyramid]
        return mods + ([self.upsample] if self.upsample is not None else [])


class NCSNpp(nn.Module):
    """NCSN++ / DDPM++ U-Net; keyword options as score_sde's ``config.model`` / ``config.data``
    (see :func:`.ncsnpp_config.validate_ncsnpp` for the list, defaults and checks)."""

    def __init__(self, **config):
        super().__init__()
        self.config = cfg = validate_ncsnpp(config)
        nf = cfg["nf"]
        self.act = make_activation(cfg["nonlinearity"])
        self.centered, self.scale_by_sigma = cfg["centered"], cfg["scale_by_sigma"]
        self.embedding_type, self.conditional = cfg["embedding_type"], cfg["conditional"]
        self.progressive, self.progressive_input = cfg["progressive"], cfg["progressive_input"]
        self.skip_rescale, self.nf = cfg["skip_rescale"], nf
        self.checkpoint_levels = cfg["checkpoint_levels"]
        self.recompute_norm_act, self.memory_format = cfg["recompute_norm_act"], cfg["memory_format"]
        sigmas = torch.exp(torch.linspace(math.log(cfg["sigma_max"]), math.log(cfg["sigma_min"]), cfg["num_scales"],
                                          dtype=torch.float64))
        self.register_buffer("sigmas", sigmas, persistent=False)  # descending ladder (official get_sigmas)

        self.fir_k = cfg["fir_kernel"] if cfg["fir"] else None
        temb_dim = 4 * nf
        self.embed = nn.Module()
        if self.embedding_type == "fourier":
            self.embed.fourier = GaussianFourierProjection(nf, cfg["fourier_scale"])
        if self.conditional:
            self.embed.dense0 = dense(2 * nf if self.embedding_type == "fourier" else nf, temb_dim)
            self.embed.dense1 = dense(temb_dim, temb_dim)
        self.conv_in = conv(cfg["num_channels"], nf)
        skip_ch = self._build_encoder()
        in_ch = skip_ch[-1]
        self.mid = nn.ModuleDict({"block0": self._block(in_ch), "attn": self._attn(in_ch),
                                  "block1": self._block(in_ch)})
        in_ch = self._build_decoder(skip_ch, in_ch)
        self.head = None
        if self.progressive != "output_skip":
            self.head = nn.ModuleDict({"norm": group_norm(in_ch),
                                       "conv": conv(in_ch, cfg["num_channels"], init_scale=cfg["init_scale"])})

    def _block(self, in_ch: int, out_ch: int | None = None, **kw) -> ResBlock:
        cfg = self.config
        return ResBlock(self.act, in_ch, out_ch, kind=cfg["resblock_type"], temb_dim=4 * self.nf,
                        dropout=cfg["dropout"], skip_rescale=self.skip_rescale, init_scale=cfg["init_scale"],
                        fir_kernel=self.fir_k, recompute_norm_act=self.recompute_norm_act, **kw)

    def _attn(self, ch: int) -> AttnBlock:
        return AttnBlock(ch, skip_rescale=self.skip_rescale, init_scale=self.config["init_scale"])

    def _resampler(self, in_ch: int, *, up: bool) -> nn.Module:
        """Level transition: a resampling ResBlock (BigGAN) or a stand-alone Resample (DDPM)."""
        if self.config["resblock_type"] == "biggan":
            return self._block(in_ch, up=up, down=not up)
        return Resample(in_ch, up=up, with_conv=self.config["resamp_with_conv"], fir_kernel=self.fir_k)

    def _build_encoder(self) -> list[int]:
        """``self.down``; returns the channel count of every skip activation, in push order."""
        cfg, nf = self.config, self.nf
        skip_ch, in_ch, pyr_ch = [nf], nf, cfg["num_channels"]
        self.down = nn.ModuleList()
        for i, mult in enumerate(cfg["ch_mult"]):
            out_ch = nf * mult
            blocks = [self._block(in_ch if b == 0 else out_ch, out_ch) for b in range(cfg["num_res_blocks"])]
            in_ch = out_ch
            skip_ch += [out_ch] * cfg["num_res_blocks"]
            attns = [self._attn(out_ch) for _ in blocks] if cfg["image_size"] // 2**i in cfg["attn_resolutions"] else []
            down = pyramid = None
            if i != len(cfg["ch_mult"]) - 1:
                down = self._resampler(in_ch, up=False)
                if self.progressive_input == "input_skip":
                    pyramid = nn.Module()
                    pyramid.resample = Resample(pyr_ch, up=False, with_conv=False, fir_kernel=self.fir_k)
                    pyramid.combine = Combine(pyr_ch, in_ch, cfg["progressive_combine"])
                    in_ch *= 2 if cfg["progressive_combine"] == "cat" else 1
                elif self.progressive_input == "residual":
                    pyramid = Resample(pyr_ch, in_ch, up=False, with_conv=True, fir_kernel=self.fir_k)
                    pyr_ch = in_ch
                skip_ch.append(in_ch)
            self.down.append(DownLevel(blocks, attns, down, pyramid, self.progressive_input, self.skip_rescale))
        return skip_ch

    def _build_decoder(self, skip_ch: list[int], in_ch: int) -> int:
        """``self.up`` (lowest resolution first), consuming ``skip_ch``; returns the output width."""
        cfg, pyr_ch = self.config, 0
        self.up = nn.ModuleList()
        for i in reversed(range(len(cfg["ch_mult"]))):
            out_ch = self.nf * cfg["ch_mult"][i]
            blocks = []
            for _ in range(cfg["num_res_blocks"] + 1):
                blocks.append(self._block(in_ch + skip_ch.pop(), out_ch))
                in_ch = out_ch
            attn = self._attn(in_ch) if cfg["image_size"] // 2**i in cfg["attn_resolutions"] else None
            pyramid, pyr_ch = self._up_pyramid(in_ch, pyr_ch, cfg["num_channels"], first=i == len(cfg["ch_mult"]) - 1,
                                               fir_k=self.fir_k)
            upsample = self._resampler(in_ch, up=True) if i != 0 else None
            self.up.append(UpLevel(blocks, attn, pyramid, upsample, self.progressive, self.skip_rescale, self.act,
                                   self.recompute_norm_act))
        assert not skip_ch
        return in_ch

    def _up_pyramid(self, in_ch: int, pyr_ch: int, channels: int, *, first: bool, fir_k):
        """Output-pyramid modules of one decoder level (``progressive``), and the new pyramid width."""
        if self.progressive == "none":
            return None, pyr_ch
        p = nn.ModuleDict()
        if self.progressive == "output_skip":
            if not first:
                p["resample"] = Resample(pyr_ch, up=True, with_conv=False, fir_kernel=fir_k)
            p["norm"] = group_norm(in_ch)
            p["conv"] = conv(in_ch, channels, init_scale=self.config["init_scale"])
            return p, channels
        if first:  # 'residual'
            p["norm"] = group_norm(in_ch)
            p["conv"] = conv(in_ch, in_ch)
        else:
            p["resample"] = Resample(pyr_ch, in_ch, up=True, with_conv=True, fir_kernel=fir_k)
        return p, in_ch

    # ----------------------------------------------------------------------------------------
    def official_modules(self) -> list[nn.Module]:
        """Our modules in score_sde's ``all_modules`` construction order (for checkpoint mapping)."""
        mods: list[nn.Module] = []
        if self.embedding_type == "fourier":
            mods.append(self.embed.fourier)
        if self.conditional:
            mods += [self.embed.dense0, self.embed.dense1]
        mods.append(self.conv_in)
        for level in self.down:
            mods += level.official_order()
        mods += [self.mid["block0"], self.mid["attn"], self.mid["block1"]]
        for level in self.up:
            mods += level.official_order()
        if self.head is not None:
            mods += [self.head["norm"], self.head["conv"]]
        return mods

    def _embed(self, labels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """act(temb) ``(B, 4 nf)`` (None if unconditional) and sigma ``(B,)`` for ``scale_by_sigma``."""
        if self.embedding_type == "fourier":
            sigma = labels
            emb = self.embed.fourier(torch.log(labels))
        else:
            sigma = self.sigmas[labels.long()] if self.scale_by_sigma else None
            emb = timestep_embedding(labels, self.nf)
        if not self.conditional:
            return None, sigma
        emb = self.embed.dense0(emb.to(self.embed.dense0.weight.dtype))
        return self.act(self.embed.dense1(self.act(emb))), sigma

    def _run(self, module: nn.Module, *args):
        if self.checkpoint_levels and self.training and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def _channels_last(self, x: torch.Tensor) -> bool:
        if self.memory_format == "auto":
            return AUTO_CHANNELS_LAST.get(x.device.type, False)
        return self.memory_format == "channels_last"

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        temb, sigma = self._embed(labels)
        out_format = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else None
        if self._channels_last(x):  # every conv, norm and resampling after this keeps NHWC
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.centered:
            x = 2 * x - 1.0  # data in [0, 1] -> [-1, 1]
        pyramid_img = x if self.progressive_input != "none" else None
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            level_skips, h, pyramid_img = self._run(level, h, temb, pyramid_img)
            skips += level_skips
        h = self.mid["block1"](self.mid["attn"](self.mid["block0"](h, temb)), temb)
        pyramid = None
        for level in self.up:
            n = len(level.blocks)
            h, pyramid = self._run(level, h, temb, skips[-n:], pyramid)
            del skips[-n:]
        if self.head is not None:
            lean = recompute_enabled(self.recompute_norm_act, h)
            h = self.head["conv"](norm_act(self.head["norm"], self.act, h, lean))
        else:
            h = pyramid
        if sigma is not None and self.scale_by_sigma:
            h = h / sigma.to(h.dtype).reshape(-1, *([1] * (h.ndim - 1)))
        return h if out_format is not None else h.contiguous()  # the caller's layout
