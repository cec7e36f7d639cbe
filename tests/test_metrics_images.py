"""FID / KID / IS through torchmetrics with small feature networks whose answers are known."""

import numpy as np
import pytest
import torch
from torch import nn

from sgm_lightning.metrics.images import (
    ImageMetrics,
    load_inception,
    load_reference_stats,
    reference_stats,
    save_reference_stats,
)

SHAPE = (1, 4, 4)


class LinearFeatures(nn.Module):
    """f(x) = W x / 255 on flattened uint8 images: a shift by c pixels moves f by W c 1 / 255."""

    def __init__(self, d_out=5, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(d_out, 16, generator=g, dtype=torch.float64))

    def forward(self, images):
        return (images.flatten(1).double() / 255) @ self.W.T


def _images(n, seed, lo=30, hi=200):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi, (n, *SHAPE), dtype=torch.uint8, generator=g)


def test_identical_sets_score_zero_and_a_shift_gives_the_closed_form_frechet_distance():
    feats = LinearFeatures()
    real = _images(300, 0)
    m = ImageMetrics(feats, image_shape=SHAPE, kid_subsets=20, kid_subset_size=100)
    for chunk in real.split(64):  # batches of any size accumulate
        m.update_real(chunk)
    m.update_fake(real)
    same = m.compute()
    assert set(same) == {"fid_n300", "kid_n300", "kid_std_n300"}  # no logits -> no IS
    assert abs(same["fid_n300"]) < 1e-8
    # KID's unbiased MMD^2 over random subsets: about 0 within its subset spread
    assert abs(same["kid_n300"]) < 2 * same["kid_std_n300"]

    m.reset_fake()
    m.update_fake(real + 20)  # every pixel +20: same covariance, mean moved by W 20 1 / 255
    shifted = m.compute()
    delta = feats.W.detach() @ torch.full((16,), 20 / 255, dtype=torch.float64)
    assert shifted["fid_n300"] == pytest.approx(float(delta @ delta), rel=1e-7)
    assert shifted["kid_n300"] > 3 * shifted["kid_std_n300"] > 3 * same["kid_std_n300"]


def test_fid_grows_with_spread_and_matches_the_trace_formula_for_scaled_features():
    # fake images with the same mean but half the spread: Sigma_f = Sigma_r / 4 for linear features,
    # so FID = tr(S + S/4 - 2 sqrt(S S/4)) = tr(S) / 4 with S the feature covariance.
    feats = LinearFeatures(d_out=3)
    real = _images(400, 1, lo=40, hi=201)
    mid = 120
    fake = (mid + (real.int() - mid) // 2).to(torch.uint8)
    m = ImageMetrics(feats, image_shape=SHAPE, kid=False)
    m.update_real(real)
    m.update_fake(fake)
    f_r, f_f = feats(real).detach(), feats(fake).detach()
    mu_r, mu_f = f_r.mean(0), f_f.mean(0)
    S_r, S_f = torch.cov(f_r.T), torch.cov(f_f.T)
    ev = torch.linalg.eigvals(S_r @ S_f).sqrt().real.sum()
    closed = float((mu_r - mu_f).square().sum() + S_r.trace() + S_f.trace() - 2 * ev)
    assert m.compute()["fid_n400"] == pytest.approx(closed, rel=1e-7)
    assert closed > 0.5 * float(S_r.trace()) / 4  # the spread term dominates here


def test_reference_stats_saved_and_reloaded_give_the_same_scores(tmp_path):
    feats = LinearFeatures()
    real, fake = _images(200, 2), _images(150, 3, lo=20, hi=220)
    direct = ImageMetrics(feats, image_shape=SHAPE, kid_subsets=10, kid_subset_size=100)
    direct.update_real(real)
    direct.update_fake(fake)
    want = direct.compute()

    stats = reference_stats(feats, real.split(70), keep_features=True)
    assert stats["n"] == 200 and stats["mu"].shape == (5,) and stats["sigma"].shape == (5, 5)
    save_reference_stats(tmp_path / "stats" / "ref.npz", stats)  # the folder is created
    loaded = ImageMetrics(feats, image_shape=SHAPE, kid_subsets=10, kid_subset_size=100)
    loaded.load_reference(load_reference_stats(tmp_path / "stats" / "ref.npz"))
    loaded.update_fake(fake)
    got = loaded.compute()
    assert got.keys() == want.keys() == {"fid_n150", "kid_n150", "kid_std_n150"}
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k


class OneHotLogits(nn.Module):
    """Logits that put all mass on class (mean pixel // 64) of 4: IS = exp(H(class frequencies))."""

    def forward(self, images):
        cls = images.flatten(1).float().mean(1).div(64).long().clamp(0, 3)
        feats = images.flatten(1).double() / 255
        return feats, 50.0 * nn.functional.one_hot(cls, 4).double()


@pytest.mark.filterwarnings(r"ignore:std\(\). degrees of freedom:UserWarning")  # one split: no spread
def test_inception_score_is_the_number_of_equally_used_classes():
    imgs = torch.cat([torch.full((25, *SHAPE), 32 + 64 * k, dtype=torch.uint8) for k in range(4)])
    imgs[:, 0, 0, 0] += torch.arange(100, dtype=torch.uint8) % 7  # distinct images, same classes
    m = ImageMetrics(OneHotLogits(), image_shape=SHAPE, kid=False, is_splits=1)
    m.update_real(imgs)
    m.update_fake(imgs)
    assert m.compute()["is_n100"] == pytest.approx(4.0, rel=1e-6)
    m.reset_fake()
    m.update_fake(imgs[:25])  # one class only
    assert m.compute()["is_n25"] == pytest.approx(1.0, rel=1e-6)


def test_without_weights_or_feature_net_the_error_says_what_to_pass(tmp_path):
    with pytest.raises(ValueError, match="inception_weights.*weights file"):
        load_inception(None)
    with pytest.raises(FileNotFoundError, match="inception_weights"):
        load_inception(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not the FID Inception"):
        load_inception(bad)


def test_reference_file_errors_name_the_key(tmp_path):
    np.savez(tmp_path / "r.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match="'sigma'"):
        load_reference_stats(tmp_path / "r.npz")
    np.savez(tmp_path / "r.npz", mu=np.zeros(3), sigma=np.eye(3))
    m = ImageMetrics(LinearFeatures(), image_shape=SHAPE)
    with pytest.raises(ValueError, match="do not match"):
        m.load_reference(load_reference_stats(tmp_path / "r.npz"))
    with pytest.raises(ValueError, match="uint8"):
        m.update_fake(torch.zeros(2, *SHAPE))


def test_inception_port_loads_from_a_local_file_and_gives_pool_and_logits(tmp_path, monkeypatch):
    # no real weights offline: build the architecture with random weights, save, load back strictly
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    monkeypatch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: None)
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
    arch = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    state = {k: v.clone() for k, v in arch.state_dict().items()}
    monkeypatch.undo()
    torch.save(state, tmp_path / "w.pth")
    net = load_inception(tmp_path / "w.pth")
    assert torch.equal(net.net.fc.weight, state["fc.weight"])
    with torch.no_grad():
        pool, logits = net(torch.randint(0, 256, (1, 1, 8, 8), dtype=torch.uint8))
    assert pool.shape == (1, 2048) and logits.shape == (1, 1008)
    assert torch.allclose(logits, pool @ state["fc.weight"].T, rtol=1e-4, atol=1e-4)
    del state["fc.bias"]
    torch.save(state, tmp_path / "w2.pth")
    with pytest.raises(ValueError, match="does not match"):
        load_inception(tmp_path / "w2.pth")
