"""Named network configurations: the official score_sde / NCSNv2 setups and our small default.

``PRESETS[name]`` is ``{"arch": ..., **kwargs}``; build it with
``build_network(**PRESETS[name])``. The official entries copy the ``model``/``data`` fields of
the score_sde config files named in each comment (checked against their parameter counts in
``tests/test_nets_convert.py``); every sigma-ladder value the network uses is included.
"""

from __future__ import annotations

_NCSNPP_VE = dict(  # configs/ve/cifar10_ncsnpp_continuous.py
    arch="ncsnpp", image_size=32, num_channels=3, centered=False, nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4,
    attn_resolutions=(16,), dropout=0.1, resamp_with_conv=True, conditional=True, embedding_type="fourier",
    fourier_scale=16.0, resblock_type="biggan", fir=True, fir_kernel=(1, 3, 3, 1), skip_rescale=True,
    progressive="none", progressive_input="residual", progressive_combine="sum", init_scale=0.0,
    scale_by_sigma=True, nonlinearity="swish", sigma_min=0.01, sigma_max=50.0, num_scales=1000,
)

PRESETS: dict[str, dict] = {
    # Song et al. 2021, CIFAR-10 NCSN++ cont. (VE): 62.76M params (+128 fixed Fourier W)
    "ncsnpp_cifar10": dict(_NCSNPP_VE),
    # configs/ve/cifar10_ncsnpp_deep_continuous.py
    "ncsnpp_deep_cifar10": dict(_NCSNPP_VE, num_res_blocks=8),
    # configs/vp/cifar10_ddpmpp_continuous.py: DDPM++ cont. (VP), 61.80M params
    "ddpmpp_cifar10": dict(_NCSNPP_VE, centered=True, embedding_type="positional", fir=False,
                           progressive_input="none", scale_by_sigma=False),
    # configs/vp/cifar10_ddpmpp_deep_continuous.py
    "ddpmpp_deep_cifar10": dict(_NCSNPP_VE, centered=True, embedding_type="positional", fir=False,
                                progressive_input="none", scale_by_sigma=False, num_res_blocks=8),
    # configs/ve/celeba_ncsnpp.py: CelebA-64 NCSN++ (VE, discrete: positional embedding of the level
    # index, output divided by sigmas[index]); sigma_max 90 (NCSNv2 technique 1 for CelebA)
    "ncsnpp_celeba64": dict(_NCSNPP_VE, image_size=64, embedding_type="positional", sigma_max=90.0,
                            num_scales=1000),
    # configs/ve/ffhq_256_ncsnpp_continuous.py (also celebahq_256 / church / bedroom): 65.57M params
    "ncsnpp_ffhq256": dict(_NCSNPP_VE, image_size=256, ch_mult=(1, 1, 2, 2, 2, 2, 2), num_res_blocks=2,
                           progressive="output_skip", progressive_input="input_skip", sigma_max=348.0,
                           num_scales=2000, dropout=0.0),
    # configs/ve/ffhq_ncsnpp_continuous.py (1024 px): 105.79M params
    "ncsnpp_ffhq1024": dict(_NCSNPP_VE, image_size=1024, nf=16, ch_mult=(1, 2, 4, 8, 16, 32, 32, 32),
                            num_res_blocks=1, progressive="output_skip", progressive_input="input_skip",
                            sigma_max=1348.0, num_scales=2000, dropout=0.0),
    # NCSNv2 (Song & Ermon 2020), configs/ve/ncsnv2/cifar10.py: 29.69M params, 232 levels
    "ncsnv2_cifar10": dict(arch="ncsnv2", image_size=32, num_channels=3, centered=False, nf=128,
                           nonlinearity="elu", sigma_min=0.01, sigma_max=50.0, num_scales=232),
    # configs/ve/ncsnv2/celeba.py: 64 px, 500 levels, sigma_max 90
    "ncsnv2_celeba64": dict(arch="ncsnv2", image_size=64, num_channels=3, centered=False, nf=128,
                            nonlinearity="elu", sigma_min=0.01, sigma_max=90.0, num_scales=500),
    # 16x16 grayscale digits at nf 32, two BigGAN blocks per level, FIR (1.04M params); mnist.yaml's net
    "ncsnpp_digits": dict(_NCSNPP_VE, image_size=16, num_channels=1, nf=32, ch_mult=(1, 2), num_res_blocks=2,
                          attn_resolutions=(8,), dropout=0.0, sigma_max=20.0),
    # The default run's network (configs/digits.yaml): the same shape at nf 16, one DDPM block per
    # level, no FIR, no progressive input (0.17M params; docs/default-run.md)
    "ncsnpp_digits_nf16": dict(_NCSNPP_VE, image_size=16, num_channels=1, nf=16, ch_mult=(1, 2), num_res_blocks=1,
                               resblock_type="ddpm", fir=False, progressive_input="none",
                               attn_resolutions=(8,), dropout=0.0, sigma_max=20.0),
}
