"""EMA: each schedule matches its formula; the average is the closed-form weighted sum; state round-trips."""

from __future__ import annotations

import pytest
import torch

from sgm_lightning.ema import EMA, ema_decay


def test_schedules_match_their_formulas():
    assert ema_decay(1, decay=0.999, warmup="score_sde") == pytest.approx(2 / 11)
    assert ema_decay(100, decay=0.999, warmup="score_sde") == pytest.approx(101 / 110)
    assert ema_decay(10**6, decay=0.999, warmup="score_sde") == 0.999
    assert ema_decay(7, decay=0.9, warmup="none") == 0.9
    assert ema_decay(10, decay=0.9999, warmup="power", inv_gamma=1.0, power=0.75) == pytest.approx(1 - 11**-0.75)
    # EDM half-life: after h steps the old average keeps exactly half its weight
    beta = ema_decay(10**6, warmup="halflife", halflife_steps=500.0, ramp=0.05)
    assert beta**500 == pytest.approx(0.5)
    assert ema_decay(100, warmup="halflife", halflife_steps=500.0, ramp=0.05) == pytest.approx(0.5 ** (1 / 5))
    assert ema_decay(100, warmup="halflife", halflife_steps=500.0, ramp=None) == pytest.approx(0.5 ** (1 / 500))
    with pytest.raises(ValueError, match="warmup"):
        ema_decay(1, warmup="linear")


def test_average_equals_closed_form_and_swap_restores():
    """ema_n = prod(beta) ema_0 + sum_k (1 - beta_k) prod_{j>k} beta_j theta_k, with theta_k = k."""
    p = [torch.zeros(3, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)]
    ema = EMA(p, decay=0.95, warmup="score_sde")
    expect = 0.0
    for k in range(1, 61):
        for q in p:
            q.fill_(float(k))
        beta = ema.update(p)
        assert beta == pytest.approx(min(0.95, (1 + k) / (10 + k)))
        expect = beta * expect + (1 - beta) * k
    assert ema.num_updates == 60
    assert torch.allclose(ema.shadow[0], torch.full((3,), expect, dtype=torch.float64))
    with ema.averaged(p):
        assert torch.allclose(p[1], torch.full((2, 2), expect, dtype=torch.float64))
    assert (p[0] == 60).all() and (p[1] == 60).all()
    other = EMA([torch.zeros(3, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)], decay=0.95)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 60 and torch.equal(other.shadow[1], ema.shadow[1])
    with pytest.raises(ValueError, match="ema"):
        EMA([torch.zeros(4)]).load_state_dict({"shadow": [torch.zeros(5)], "num_updates": 1})
