"""Gaussian mixtures with exact noised scores: the ground truth the samplers are tested against.

A mixture p = sum_k w_k N(mu_k, C_k) pushed through any affine forward process
x_t = s(t) x_0 + std(t) z (see :mod:`sgm_lightning.sde`) stays a mixture:

    p_t = sum_k w_k N(s mu_k, s^2 C_k + std^2 I)          (VE: s = 1; VP/sub-VP/OU: s < 1)

and its score is grad log p_t(x) = sum_k r_k(x) (s^2 C_k + std^2 I)^{-1} (s mu_k - x), with the
responsibilities r_k computed by log-sum-exp so the score stays finite far from the data.

Each covariance is stored by its eigendecomposition C_k = U_k diag(lam_k) U_k^T, so the noised
covariance of *every* sample in a batch is U_k diag(s^2 lam_k + std^2) U_k^T: per-sample times
cost one broadcast, no per-sample factorisation. Isotropic components skip the rotation.

Score-error injection (Lee, Lu & Tan 2022 assume only E_{p_t}||s - grad log p_t||^2 <= eps^2):
:class:`SmoothError` (a smooth random field with exactly that L2(p_t) norm), :class:`BiasError`
(a constant offset), :class:`BadSetError` (a spurious attracting mode on a region of tiny
probability, the situation the warm-start argument is about). Each wraps a score_fn into a new one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .rng import GeneratorLike, rand, randn
from .sde import SDE, ScoreFn


def _as_f64(value, name: str) -> torch.Tensor:
    try:
        return torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected numbers, got {type(value).__name__} ({err})") from None


class GaussianMixture:
    """sum_k w_k N(mu_k, C_k) in R^d.

    Args:
        weights: ``(K,)`` non-negative mixture weights (normalised to sum 1).
        means: ``(K, d)`` component means.
        stds: ``(K,)`` isotropic standard deviations (C_k = stds_k^2 I), or a scalar for all.
        covs: ``(K, d, d)`` full symmetric positive-definite covariances instead of ``stds``.

    Everything is stored in float64 on the CPU and cast to the dtype/device of the input.
    """

    def __init__(self, weights, means, stds=None, *, covs=None):
        w = _as_f64(weights, "weights")
        mu = _as_f64(means, "means")
        if mu.ndim != 2:
            raise ValueError(f"means: expected shape (K, d), got {tuple(mu.shape)}")
        K, d = mu.shape
        if w.shape != (K,):
            raise ValueError(f"weights: expected shape ({K},) to match means, got {tuple(w.shape)}")
        if not torch.all(w >= 0) or not w.sum() > 0:
            raise ValueError("weights: must be non-negative with a positive sum")
        self.weights, self.means = w / w.sum(), mu
        if (stds is None) == (covs is None):
            raise ValueError("stds, covs: pass exactly one of them (isotropic stds or full covs)")
        if covs is None:
            s = _as_f64(stds, "stds")
            s = s.expand(K).clone() if s.ndim == 0 else s
            if s.shape != (K,) or not torch.all(s > 0):
                raise ValueError(f"stds: expected {K} positive values, got {s.tolist()}")
            self.stds, self.covs = s, None
            self._eigvals = (s**2)[:, None].expand(K, d).clone()  # (K, d)
            self._eigvecs = None
        else:
            C = _as_f64(covs, "covs")
            if C.shape != (K, d, d):
                raise ValueError(f"covs: expected shape ({K}, {d}, {d}), got {tuple(C.shape)}")
            if not torch.allclose(C, C.transpose(1, 2), atol=1e-10):
                raise ValueError("covs: every covariance must be symmetric")
            lam, U = torch.linalg.eigh(C)
            if not torch.all(lam > 0):
                raise ValueError("covs: every covariance must be positive definite")
            self.stds, self.covs = None, C
            self._eigvals, self._eigvecs = lam, U
        self._cache: dict = {}

    # --- basic properties -------------------------------------------------------------------
    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def covariances(self) -> torch.Tensor:
        """``(K, d, d)`` covariance matrices (float64)."""
        if self.covs is not None:
            return self.covs
        return self._eigvals[:, :, None] * torch.eye(self.dim, dtype=torch.float64)

    def mean(self) -> torch.Tensor:
        """``(d,)`` mean of the mixture."""
        return self.weights @ self.means

    def __repr__(self) -> str:
        kind = "isotropic" if self.covs is None else "full-covariance"
        return f"GaussianMixture(K={self.n_components}, d={self.dim}, {kind})"

    def _params(self, like: torch.Tensor):
        """(log w, mu, lam, U) cast to the dtype/device of ``like`` (cached)."""
        key = (like.device, like.dtype)
        if key not in self._cache:
            cast = lambda v: None if v is None else v.to(device=like.device, dtype=like.dtype)  # noqa: E731
            self._cache[key] = (
                cast(self.weights.log()), cast(self.means), cast(self._eigvals), cast(self._eigvecs)
            )
        return self._cache[key]

    # --- sampling -------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        generator: GeneratorLike = None,
        *,
        return_labels: bool = False,
        dtype: torch.dtype = torch.float64,
        device=None,
    ):
        """``n`` draws, ``(n, d)``; with ``return_labels`` also the component index ``(n,)``.

        ``generator`` follows :mod:`sgm_lightning.rng` (one generator, or one seed per sample).
        """
        if int(n) < 1:
            raise ValueError(f"n: the number of samples must be >= 1, got {n}")
        u = rand((n,), generator, dtype=torch.float64)
        cdf = torch.cumsum(self.weights, 0)
        labels = torch.searchsorted(cdf, u * cdf[-1], right=True).clamp_(max=self.n_components - 1)
        z = randn((n, self.dim), generator, dtype=torch.float64)
        z = z * self._eigvals[labels].sqrt()
        if self._eigvecs is not None:
            z = torch.einsum("nij,nj->ni", self._eigvecs[labels], z)
        x = (self.means[labels] + z).to(device=device, dtype=dtype)
        return (x, labels.to(device)) if return_labels else x

    # --- densities and scores -------------------------------------------------------------
    def _components(self, x: torch.Tensor, scale: torch.Tensor, std: torch.Tensor):
        """Per-component log(w_k N_k(x)) ``(B, K)`` and grad log N_k ``(B, K, d)``.

        Component k of the noised law is N(scale mu_k, scale^2 C_k + std^2 I); ``scale`` and
        ``std`` are ``(B,)`` (or ``(1,)``) so every sample may sit at its own time.
        """
        logw, mu, lam, U = self._params(x)
        diff = x[:, None, :] - scale[:, None, None] * mu[None]  # (B, K, d)
        var = scale[:, None, None] ** 2 * lam[None] + std[:, None, None] ** 2  # (B, K, d)
        if U is not None:  # rotate into each component's eigenbasis
            diff = torch.einsum("kij,bki->bkj", U, diff)
        g = diff / var
        logp = logw - 0.5 * ((diff * g).sum(-1) + var.log().sum(-1) + self.dim * math.log(2 * math.pi))
        if U is not None:
            g = torch.einsum("kij,bkj->bki", U, g)
        return logp, -g

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(
                f"x: each sample has {flat.shape[1]} values but the mixture lives in d={self.dim}"
            )
        return flat

    def _log_prob_and_score(self, x, scale, std):
        logp, grads = self._components(self._flat(x), scale, std)
        total = torch.logsumexp(logp, dim=1)
        resp = torch.softmax(logp, dim=1)  # responsibilities r_k(x), stable far away
        score = torch.einsum("bk,bkd->bd", resp, grads)
        return total, score.reshape(x.shape)

    def _unit(self, x):
        one = torch.ones(1, dtype=x.dtype, device=x.device)
        return one, torch.zeros_like(one)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for ``x`` of shape ``(B, d)`` (or ``(B, ...)`` with d values) -> ``(B,)``."""
        return self._log_prob_and_score(x, *self._unit(x))[0]

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x), shape of ``x``."""
        return self._log_prob_and_score(x, *self._unit(x))[1]

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log(w_k N_k(x)) for every component, ``(B, K)``."""
        return self._components(self._flat(x), *self._unit(x))[0]

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Index ``(B,)`` of the component with the largest posterior probability."""
        return self.component_log_probs(x).argmax(dim=1)

    # --- the noised law -------------------------------------------------------------------
    def marginal(self, sde: SDE, t: float) -> GaussianMixture:
        """The exact law of x_t when x_0 ~ self and x evolves under ``sde`` (one time ``t``)."""
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(1)
        scale, std = (c.item() for c in sde.marginal_coeffs(tt))
        means = scale * self.means
        if self.covs is None:
            return GaussianMixture(self.weights, means, torch.sqrt(scale**2 * self.stds**2 + std**2))
        covs = scale**2 * self.covs + std**2 * torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, means, covs=covs)

    def score_fn(self, sde: SDE) -> ScoreFn:
        """Exact ``score_fn(x, t)`` of p_t: ``x`` is ``(B, ...)`` with d values, ``t`` is ``(B,)``
        (each sample at its own time) or a scalar. The function carries ``.dim = d``."""

        def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1)
            scale, std = sde.marginal_coeffs(t)
            return self._log_prob_and_score(x, scale, std)[1]

        score_fn.dim = self.dim
        score_fn.mixture = self
        return score_fn

    def log_prob_fn(self, sde: SDE) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``log_prob_fn(x, t) -> (B,)``: the exact log-density of p_t, per-sample ``t``."""

        def log_prob_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1)
            return self._log_prob_and_score(x, *sde.marginal_coeffs(t))[0]

        return log_prob_fn


# --- score-error injection ---------------------------------------------------------------------


def _times(t) -> torch.Tensor:
    """Times as a float64 CPU vector (the error normalisations are computed in float64)."""
    return torch.as_tensor(t, dtype=torch.float64).detach().cpu().reshape(-1)


class _ScoreError:
    """A score_fn ``base(x, t) + error(x, t)``; subclasses define :meth:`error`."""

    def __init__(self, score_fn: ScoreFn):
        self.base = score_fn
        if hasattr(score_fn, "dim"):
            self.dim = score_fn.dim

    def error(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.base(x, t) + self.error(x, t)


class SmoothError(_ScoreError):
    """Add e(x, t) = c(t) A sin(W x + b), scaled so that E_{p_t}||e||^2 = eps^2 exactly.

    W ``(m, d)`` has N(0, 1/length_scale^2) entries, b ~ U[0, 2 pi), A ``(d, m)`` is Gaussian.
    The normaliser is exact: for x ~ N(mu, C), E cos(v.x + c) = cos(v.mu + c) exp(-v^T C v / 2),
    and sin(u) sin(u') = (cos(u - u') - cos(u + u')) / 2, summed over the mixture's components
    of p_t (means s mu_k, covariances s^2 C_k + std^2 I).
    """

    def __init__(self, score_fn: ScoreFn, mixture: GaussianMixture, sde: SDE, eps: float, *,
                 n_features: int = 16, length_scale: float = 1.0, seed: int = 0):
        super().__init__(score_fn)
        if not eps >= 0:
            raise ValueError(f"eps: the L2 error size must be >= 0, got {eps}")
        if int(n_features) < 1 or not length_scale > 0:
            raise ValueError("n_features, length_scale: need n_features >= 1 and length_scale > 0")
        self.mixture, self.sde, self.eps = mixture, sde, float(eps)
        g = torch.Generator().manual_seed(int(seed))
        m, d = int(n_features), mixture.dim
        self.W = torch.randn(m, d, generator=g, dtype=torch.float64) / length_scale
        self.b = 2 * math.pi * torch.rand(m, generator=g, dtype=torch.float64)
        self.A = torch.randn(d, m, generator=g, dtype=torch.float64) / math.sqrt(m)
        C = mixture.covariances()
        self._tables = []
        for sign in (-1.0, 1.0):  # v = w_j -/+ w_l, c = b_j -/+ b_l
            V = self.W[:, None, :] + sign * self.W[None, :, :]  # (m, m, d)
            self._tables.append((
                sign,
                torch.einsum("jld,kd->kjl", V, mixture.means),  # v . mu_k
                torch.einsum("jld,kde,jle->kjl", V, C, V),  # v^T C_k v
                (V**2).sum(-1),  # ||v||^2
                self.b[:, None] + sign * self.b[None, :],
            ))
        self._gram = self.A.T @ self.A  # (m, m)
        self._cache: dict = {}

    def raw_mean_sq(self, t) -> torch.Tensor:
        """E_{p_t}||A sin(W x + b)||^2 for each time in ``t`` -> ``(B,)`` float64."""
        scale, std = self.sde.marginal_coeffs(_times(t))
        a, s2 = scale[:, None, None, None], (std**2)[:, None, None, None]
        E = 0.0
        for sign, P, Q, N, c in self._tables:
            ecos = torch.cos(a * P + c) * torch.exp(-0.5 * (a**2 * Q + s2 * N))  # (B, K, m, m)
            E = E - 0.5 * sign * torch.einsum("k,bkjl->bjl", self.mixture.weights, ecos)
        return torch.einsum("jl,bjl->b", self._gram, E)

    def error(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        uniq, inverse = torch.unique(_times(t), return_inverse=True)  # samplers share one t
        c = (self.eps / self.raw_mean_sq(uniq).sqrt())[inverse].to(flat)
        c = c.expand(x.shape[0]) if c.numel() == 1 else c
        W, b, A = (v.to(flat) for v in (self.W, self.b, self.A))
        e = torch.sin(flat @ W.T + b) @ A.T
        return (c[:, None] * e).reshape(x.shape)

    def mean_sq_error(self, t) -> torch.Tensor:
        """E_{p_t}||e||^2: eps^2 at every t by construction."""
        return torch.full_like(_times(t), self.eps**2)


class BiasError(_ScoreError):
    """Add a constant e = eps * u (u a unit vector, default e_1): E_{p_t}||e||^2 = eps^2."""

    def __init__(self, score_fn: ScoreFn, eps: float, direction=None, *, dim: int | None = None):
        super().__init__(score_fn)
        d = dim if dim is not None else getattr(score_fn, "dim", None)
        if direction is None:
            if d is None:
                raise ValueError("direction: pass a direction vector (or dim=) for this score_fn")
            direction = torch.zeros(d, dtype=torch.float64)
            direction[0] = 1.0
        u = _as_f64(direction, "direction").reshape(-1)
        if not u.norm() > 0:
            raise ValueError("direction: must be a non-zero vector")
        self.eps, self.u = float(eps), u / u.norm()

    def error(self, x, t):
        e = (self.eps * self.u).to(x)
        return e.expand(x.shape[0], -1).reshape(x.shape)

    def mean_sq_error(self, t) -> torch.Tensor:
        return torch.full_like(_times(t), self.eps**2)


class BadSetError(_ScoreError):
    """Add a spurious attracting mode on a region of tiny p_t-probability (LLT22's bad set).

    Along the unit direction u (default e_1) each component k of p_t projects to N(m_k, s_k^2).
    With k* the component of largest edge m_k + threshold s_k, the bad set is
    B_t = {u.x > m_k* + threshold s_k*}; inside it the score gains (shift / s_k*) u, which
    cancels component k*'s pull at u.x = m_k* + shift s_k*: a spurious mode there.
    For data N(0, I) under VE this is docs/theory.md's E4b: 4 sqrt(v) edge, mode at 8 sqrt(v).
    """

    def __init__(self, score_fn: ScoreFn, mixture: GaussianMixture, sde: SDE, *,
                 direction=None, threshold: float = 4.0, shift: float = 8.0):
        super().__init__(score_fn)
        if not 0 < threshold < shift:
            raise ValueError(f"threshold, shift: need 0 < threshold < shift, got {threshold}, {shift}")
        u = torch.zeros(mixture.dim, dtype=torch.float64)
        u[0] = 1.0
        u = u if direction is None else _as_f64(direction, "direction").reshape(-1)
        self.u = u / u.norm()
        self.mixture, self.sde = mixture, sde
        self.threshold, self.shift = float(threshold), float(shift)
        C = mixture.covariances()
        self._mu_u = mixture.means @ self.u  # (K,)
        self._var_u = torch.einsum("i,kij,j->k", self.u, C, self.u)  # (K,)

    def _projected(self, t):
        """Projected component means/stds ``(B, K)`` and the edge component's (m*, s*) ``(B,)``."""
        scale, std = self.sde.marginal_coeffs(_times(t))
        m = scale[:, None] * self._mu_u
        s = torch.sqrt(scale[:, None] ** 2 * self._var_u + std[:, None] ** 2)
        k = (m + self.threshold * s).argmax(1, keepdim=True)
        return m, s, m.gather(1, k)[:, 0], s.gather(1, k)[:, 0]

    def error(self, x, t):
        flat = x.reshape(x.shape[0], -1)
        tt = _times(t).expand(x.shape[0]) if _times(t).numel() == 1 else _times(t)
        _, _, m_star, s_star = self._projected(tt)
        u = self.u.to(flat)
        inside = (flat @ u > (m_star + self.threshold * s_star).to(flat)).to(flat)
        e = (inside * (self.shift / s_star).to(flat))[:, None] * u
        return e.reshape(x.shape)

    def region_mass(self, t) -> torch.Tensor:
        """p_t(B_t) for each time, float64 ``(B,)``."""
        m, s, m_star, s_star = self._projected(t)
        edge = (m_star + self.threshold * s_star)[:, None]
        return (torch.special.ndtr(-(edge - m) / s) * self.mixture.weights).sum(1)

    def mean_sq_error(self, t) -> torch.Tensor:
        """E_{p_t}||e||^2 = (shift / s*)^2 p_t(B_t)."""
        return (self.shift / self._projected(t)[3]) ** 2 * self.region_mass(t)

    def spurious_mode(self, t) -> torch.Tensor:
        """u.x of the spurious mode, m* + shift s*, for each time ``(B,)``."""
        _, _, m_star, s_star = self._projected(t)
        return m_star + self.shift * s_star
