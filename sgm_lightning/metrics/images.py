"""Sample-quality metrics: FID, KID and Inception Score through torchmetrics.

Features come from a *feature network*: any module mapping uint8 images ``(B, C, H, W)`` to
features ``(B, F)``, or to a pair ``(features (B, F), logits (B, K))`` when the Inception Score
is wanted. Two sources are supported, both offline:

* :func:`load_inception`: the standard FID Inception-v3 (the TF 2015-12-05 graph ported by
  torch-fidelity, ``weights-inception-2015-12-05-6726825d.pth``) from a local file; it gives the
  2048-d pool features and the 1008 unbiased logits. Nothing is ever downloaded.
* a user-supplied module (e.g. a TorchScript file through :func:`load_feature_net`).

The features are computed once per batch and fed to torchmetrics' FID/KID/IS through identity
extractors, so one network pass serves all three metrics. torchmetrics sums (FID) or
concatenates (KID, IS) the states across ranks when it computes, so under DDP every rank updates
with its own images and the result covers all of them.

Reference statistics are ``.npz`` files with ``mu`` (F,), ``sigma`` (F, F), ``n`` and optionally
``features`` (n, F) for KID. FID depends on the sample count (it is biased upwards at small n),
so every result is named with the number of generated images: ``fid_n2000``, ``kid_n2000``, ...
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


class InceptionFeatures(nn.Module):
    """The FID Inception-v3: uint8 ``(B, C, H, W)`` (C = 1 or 3, any size) ->
    ``(pool (B, 2048), logits (B, 1008))``; resized to 299 x 299 inside, as torch-fidelity does."""

    def __init__(self, weights_path: str | os.PathLike):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048", "logits_unbiased"],
            feature_extractor_weights_path=str(weights_path),
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        pool, logits = self.net._torch_fidelity_forward(images)
        return pool, logits


def load_inception(weights_path: str | os.PathLike | None) -> InceptionFeatures:
    """The FID Inception from a local weights file, checked to be a plain state dict."""
    if weights_path is None:
        raise ValueError(
            "inception_weights: FID/KID/IS need a feature network and nothing is downloaded here; "
            f"pass the torch-fidelity FID Inception weights file ({INCEPTION_FILE}) or a feature network"
        )
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(f"inception_weights: no such file {weights_path!s}")
    try:  # refuse pickled code before torch-fidelity loads it (it uses weights_only=False)
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"inception_weights: {weights_path!s} is not a readable state dict ({err})") from None
    if not isinstance(state, dict) or "fc.weight" not in state or tuple(state["fc.weight"].shape) != (1008, 2048):
        raise ValueError(
            f"inception_weights: {weights_path!s} is not the FID Inception-v3 state dict ({INCEPTION_FILE})"
        )
    try:
        return InceptionFeatures(weights_path)
    except RuntimeError as err:  # strict load: missing or unexpected keys
        raise ValueError(f"inception_weights: {weights_path!s} does not match Inception-v3: {err}") from None


def _check_pt2(path: str | os.PathLike) -> None:
    """Refuse a ``torch.export`` archive that would unpickle code: ``torch.export.load`` falls back
    to ``torch.load(weights_only=False)`` for pickled weights, constants and sample inputs, so
    every such member must load with ``weights_only=True`` first, and no weight may be pickled."""
    import io
    import json
    import zipfile

    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.endswith(("model_weights_config.json", "model_constants_config.json")):
                pickled = [k for k, v in json.loads(z.read(name)).get("config", {}).items() if v.get("use_pickle")]
                if pickled:
                    raise ValueError(f"feature_net: {path!s} stores {pickled[0]!r} as a pickle; save the weights "
                                     "as tensors (torch.export.save of plain nn.Module parameters)")
            elif name.endswith(".pt"):
                try:
                    torch.load(io.BytesIO(z.read(name)), weights_only=True)
                except Exception as err:
                    raise ValueError(f"feature_net: {path!s}: {name} is not plain tensor data ({err})") from None


def load_feature_net(path: str | os.PathLike) -> nn.Module:
    """A user feature network (uint8 images -> features[, logits]) saved with ``torch.export.save``
    (``.pt2``; checked to unpickle no code) or ``torch.jit.save`` (TorchScript, deprecated in torch)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"feature_net: no such file {path!s}")
    if str(path).endswith(".pt2"):
        import zipfile

        try:
            _check_pt2(path)
            return torch.export.load(str(path)).module()  # an exported graph is already in eval form
        except (zipfile.BadZipFile, RuntimeError, KeyError) as err:
            raise ValueError(f"feature_net: {path!s} is not a torch.export archive ({err})") from None
    try:
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice: TorchScript is the format here
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:
        raise ValueError(f"feature_net: {path!s} is not a TorchScript module ({err})") from None


class _Given(nn.Module):
    """Identity 'extractor': the metrics receive features that were already computed."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _split(out) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    return out, None


def _rank_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _rank() -> int:
    return _rank_world()[0]


def _one_tensor(states: list, width: int, device) -> list:
    """A list state as exactly one tensor: torchmetrics gathers list states (KID, IS) element by
    element, so ranks holding different numbers of batches would wait on each other forever."""
    if not states:
        return [torch.zeros((0, width), dtype=torch.float64, device=device)]
    return [torch.cat(states)] if len(states) > 1 else states


class ImageMetrics(nn.Module):
    """FID, KID and IS of generated images against real images or saved reference statistics.

    ``features``: a feature network (see module docstring). Feed uint8 ``(B, C, H, W)`` batches
    with :meth:`update_real` / :meth:`update_fake` (or :meth:`load_reference`), then
    :meth:`compute`. ``kid_subset_size`` is capped at the number of images available.
    ``image_shape`` is the ``(C, H, W)`` of the images fed, used once to probe the feature size.
    """

    def __init__(
        self,
        features: nn.Module,
        *,
        kid: bool = True,
        inception_score: bool = True,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        is_splits: int = 10,
        seed: int = 0,  # KID subsets and IS splits are random; fixed so results repeat
        image_shape: tuple[int, int, int] = (3, 32, 32),  # (C, H, W), to probe the feature size
    ):
        super().__init__()
        try:
            features = features.eval()
        except NotImplementedError:  # a torch.export graph: its mode was fixed when it was exported
            pass
        self.features = features
        for p in self.features.parameters():  # (works for TorchScript modules too)
            p.requires_grad_(False)
        with torch.no_grad():
            feats, logits = _split(self.features(torch.zeros((2, *image_shape), dtype=torch.uint8)))
        self.num_features = feats.shape[1]
        self.logits_dim = None if logits is None else logits.shape[1]
        self.fid = FrechetInceptionDistance(_Given(self.num_features), reset_real_features=False)
        self.kid = self.inception_score = None
        with warnings.catch_warnings():  # "will save all extracted features": that is the point
            warnings.filterwarnings("ignore", message=".*save all extracted features")
            if kid:
                self.kid = KernelInceptionDistance(
                    _Given(self.num_features), subsets=kid_subsets, subset_size=kid_subset_size,
                    reset_real_features=False,
                )
            if inception_score and logits is not None:
                self.inception_score = InceptionScore(_Given(logits.shape[1]), splits=is_splits)
        self.kid_subset_size, self.seed = kid_subset_size, seed

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(features (B, F), logits or None)`` of uint8 ``images`` ``(B, C, H, W)``."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images: expected uint8 (B, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        feats, logits = _split(self.features(images))
        return feats.double(), (None if logits is None else logits.double())

    def update_real(self, images: torch.Tensor) -> None:
        feats, _ = self.extract(images)
        self.fid.update(feats, real=True)
        if self.kid is not None:
            self.kid.update(feats, real=True)

    def update_fake(self, images: torch.Tensor) -> None:
        feats, logits = self.extract(images)
        self.fid.update(feats, real=False)
        if self.kid is not None:
            self.kid.update(feats, real=False)
        if self.inception_score is not None:
            self.inception_score.update(logits)

    def reset_fake(self) -> None:
        """Forget the generated images, keep the real statistics (for the next evaluation)."""
        for m in (self.fid, self.kid, self.inception_score):
            if m is not None:
                m.reset()

    def load_reference(self, stats: dict[str, np.ndarray]) -> None:
        """Use saved real statistics (see :func:`load_reference_stats`); replaces any real data."""
        check_reference_stats(stats)
        mu, sigma, n = (torch.as_tensor(stats[k], dtype=torch.float64) for k in ("mu", "sigma", "n"))
        if mu.shape != (self.num_features,) or sigma.shape != (self.num_features,) * 2:
            raise ValueError(
                f"reference: statistics of {mu.shape[0]}-d features do not match this feature "
                f"network ({self.num_features}-d); recompute them with the same network"
            )
        device = self.fid.real_features_sum.device
        mu, sigma, n = mu.to(device), sigma.to(device), n.to(device)
        # torchmetrics keeps sums; rank 0 holds them, the others zeros, so the cross-rank sum is right
        own = _rank() == 0
        self.fid.real_features_sum = mu * n if own else torch.zeros_like(mu)
        self.fid.real_features_cov_sum = (sigma * (n - 1) + n * torch.outer(mu, mu)) if own else torch.zeros_like(sigma)
        self.fid.real_features_num_samples = n.long() if own else torch.zeros_like(n.long())
        if self.kid is not None:
            self.kid.real_features = []
            if "features" in stats:  # rank r keeps rows r, r + world, ...: the gather rebuilds them all
                rank, world = _rank_world()
                feats = torch.as_tensor(stats["features"], dtype=torch.float64, device=device)
                self.kid.real_features.append(feats[rank::world])

    def real_count(self) -> int:
        return int(self.fid.real_features_num_samples)

    def _global_count(self, count: int) -> int:
        """``count`` summed over ranks (a collective under DDP)."""
        if _rank_world()[1] == 1:
            return int(count)
        t = torch.tensor(int(count), device=self.fid.real_features_sum.device)
        torch.distributed.all_reduce(t)
        return int(t)

    def compute(self) -> dict[str, float]:
        """``{fid_n<N>, kid_n<N>, kid_std_n<N>, is_n<N>, is_std_n<N>}`` with N = generated images
        (over all ranks). Under DDP every rank must call it (the metrics gather their states)."""
        n = self._global_count(self.fid.fake_features_num_samples)
        if n < 2 or self._global_count(self.fid.real_features_num_samples) < 2:
            raise ValueError("images: FID needs at least 2 real and 2 generated images")
        out = {f"fid_n{n}": float(self.fid.compute())}
        device, F = self.fid.real_features_sum.device, self.num_features
        with torch.random.fork_rng(devices=[]):  # KID subsets and IS splits: fixed, repeatable
            torch.manual_seed(self.seed)
            if self.kid is not None:
                self.kid.real_features = _one_tensor(self.kid.real_features, F, device)
                self.kid.fake_features = _one_tensor(self.kid.fake_features, F, device)
                n_real = self._global_count(self.kid.real_features[0].shape[0])
                if n_real >= 2:
                    self.kid.subset_size = min(self.kid_subset_size, n, n_real)
                    mean, std = self.kid.compute()
                    out[f"kid_n{n}"], out[f"kid_std_n{n}"] = float(mean), float(std)
            if self.inception_score is not None:
                self.inception_score.features = _one_tensor(self.inception_score.features, self.logits_dim, device)
                mean, std = self.inception_score.compute()
                out[f"is_n{n}"], out[f"is_std_n{n}"] = float(mean), float(std)
        return out


# --- reference statistics ------------------------------------------------------------------
@torch.no_grad()
def reference_stats(
    features: nn.Module, batches: Iterable[torch.Tensor], *, keep_features: bool = False
) -> dict[str, np.ndarray]:
    """``{mu, sigma, n[, features]}`` (float64) of a dataset given as uint8 ``(B, C, H, W)`` batches.

    ``sigma`` is the unbiased covariance (divides by n - 1), as torchmetrics and pytorch-fid use.
    """
    total, outer, n, kept = None, None, 0, []
    for images in batches:
        feats = _split(features(images))[0].double().cpu()
        total = feats.sum(0) if total is None else total + feats.sum(0)
        outer = feats.T @ feats if outer is None else outer + feats.T @ feats
        n += feats.shape[0]
        if keep_features:
            kept.append(feats)
    if n < 2:
        raise ValueError(f"images: reference statistics need at least 2 images, got {n}")
    mu = total / n
    sigma = (outer - n * torch.outer(mu, mu)) / (n - 1)
    stats = {"mu": mu.numpy(), "sigma": sigma.numpy(), "n": np.array(n)}
    if keep_features:
        stats["features"] = torch.cat(kept).numpy()
    return stats


def save_reference_stats(path: str | os.PathLike, stats: dict[str, np.ndarray]) -> None:
    """Write ``stats`` to ``path`` (.npz) atomically."""
    from ..paths import atomic_file

    with atomic_file(path, "wb") as f:
        np.savez(f, **stats)


def load_reference_stats(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read ``{mu, sigma, n[, features]}`` from an .npz; a missing ``n`` (files made by other
    tools) is taken as 50000, which only matters through the (n - 1) / n covariance factor."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"reference: no such statistics file {path!s}")
    try:
        with np.load(path, allow_pickle=False) as f:
            stats = {k: f[k] for k in f.files}
    except Exception as err:
        raise ValueError(f"reference: cannot read {path!s} as .npz ({err})") from None
    for key in ("mu", "sigma"):
        if key not in stats:
            raise ValueError(f"reference: {path!s} has no {key!r} array; expected keys mu, sigma[, n, features]")
    stats.setdefault("n", np.array(50000))
    check_reference_stats(stats, str(path))
    return stats


def check_reference_stats(stats: dict, where: str = "reference") -> None:
    """Shapes (mu (F,), sigma (F, F), features (n, F)), finite values, a symmetric covariance and
    n >= 2; bad statistics would otherwise crash the matrix square root (NaN) or give nonsense."""
    mu, sigma = np.asarray(stats["mu"]), np.asarray(stats["sigma"])
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"reference: {where} has mu {mu.shape} and sigma {sigma.shape}; need (F,) and (F, F)")
    for key, a in (("mu", mu), ("sigma", sigma)):
        if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"reference: {where} {key!r} holds {a.dtype} values, not numbers")
        if not np.isfinite(a).all():
            raise ValueError(f"reference: {where} {key!r} holds {int((~np.isfinite(a)).sum())} NaN/inf values; "
                             "recompute the statistics")
    scale = max(float(np.abs(sigma).max()), 1e-30)
    if float(np.abs(sigma - sigma.T).max()) > 1e-6 * scale:
        raise ValueError(f"reference: {where} 'sigma' is not symmetric, so it is not a covariance; recompute it")
    n = np.asarray(stats.get("n", 50000))
    if n.shape != () or not np.isfinite(n) or int(n) < 2:
        raise ValueError(f"reference: {where} 'n' must be one count >= 2, got {n!r}")
    if "features" in stats:
        f = np.asarray(stats["features"])
        if f.ndim != 2 or f.shape[1] != mu.shape[0] or not np.isfinite(f).all():
            raise ValueError(f"reference: {where} 'features' must be finite (n, {mu.shape[0]}), got {f.shape}")
