"""Closed-form ground truth: a diagonal Gaussian mixture under any of the three SDEs.

p_0 = sum_k w_k N(mu_k, diag(v_k)) stays a mixture under the kernel x_t = a x_0 + s z:
p_t = sum_k w_k N(a mu_k, a^2 v_k + s^2). Its score, log-density and exact samples are closed-form, which makes it the
reference every sampler, likelihood and loss of this package is tested and benchmarked against.
:class:`GaussianMixtureModel` wraps the exact score as a diffusers ``ModelMixin`` fed exactly what a UNet is fed;
for class guidance, with the components as classes, :class:`ConditionalGaussianMixtureModel` is the exact
class-conditional network (classifier-free guidance) and :class:`GaussianMixtureClassifier` the exact noise-conditional
classifier, log p_t(k | x).
"""

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput

from .parameterization import Parameterization
from .sde import make_sde


class GaussianMixture:
    """A diagonal Gaussian mixture over flattened samples.

    Args:
        weights (`torch.Tensor`): (K,) mixture weights, summing to 1.
        means (`torch.Tensor`): (K, D) component means.
        variances (`torch.Tensor`): (K, D) component variances (> 0).
    """

    def __init__(self, weights, means, variances):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.variances = torch.as_tensor(variances, dtype=torch.float64)

    @classmethod
    def random(cls, dim, num_components=3, spread=2.0, scale=0.3, generator=None):
        """A well-separated test mixture in ``dim`` dimensions with unequal weights and anisotropic variances."""
        generator = generator or torch.Generator().manual_seed(0)
        means = spread * torch.randn(num_components, dim, generator=generator, dtype=torch.float64)
        variances = scale**2 * (0.5 + torch.rand(num_components, dim, generator=generator, dtype=torch.float64))
        weights = torch.arange(1, num_components + 1, dtype=torch.float64)
        return cls(weights / weights.sum(), means, variances)

    def _perturbed(self, a, s):
        # a, s: scalars or per-sample values (B elements); the results broadcast as (B or 1, K, D).
        a, s = (torch.as_tensor(value, dtype=torch.float64).reshape(-1, 1, 1) for value in (a, s))
        return a * self.means, a**2 * self.variances + s**2

    def _component_log_probs(self, x, a, s):
        """(B, K) log w_k + log N(x; a mu_k, a^2 v_k + s^2), and the per-component quantities."""
        means, variances = self._perturbed(a, s)
        diff = x[:, None, :] - means
        log_normal = -0.5 * (diff**2 / variances + torch.log(2 * math.pi * variances)).sum(-1)
        return torch.log(self.weights)[None] + log_normal, diff, variances

    def log_prob(self, x, a=1.0, s=0.0):
        """log p_t(x) for flattened x of shape (B, D) at kernel coefficients (a, s) (default: the data)."""
        x = x.to(torch.float64)
        return torch.logsumexp(self._component_log_probs(x, a, s)[0], dim=1)

    def component_log_posterior(self, x, a=1.0, s=0.0):
        """log p_t(k | x), shape (B, K): the exact noise-conditional classifier of the components (float64)."""
        return torch.log_softmax(self._component_log_probs(x.to(torch.float64), a, s)[0], dim=1)

    def component_score(self, x, labels, a=1.0, s=0.0):
        """grad_x log N(x; a mu_k, a^2 v_k + s^2) of each sample's component k = ``labels`` (B,), shape (B, D)."""
        means, variances = self._perturbed(a, s)
        labels = labels.to(means.device)
        means = means.expand(len(labels), -1, -1)[torch.arange(len(labels)), labels]
        variances = variances.expand(len(labels), -1, -1)[torch.arange(len(labels)), labels]
        return -(x.to(torch.float64) - means) / variances

    def score(self, x, a=1.0, s=0.0):
        """grad_x log p_t(x), shape (B, D), computed in float64."""
        x = x.to(torch.float64)
        log_probs, diff, variances = self._component_log_probs(x, a, s)
        responsibilities = torch.softmax(log_probs, dim=1)
        return -(responsibilities[..., None] * diff / variances).sum(1)

    def sample(self, num_samples, generator=None):
        """Exact samples and their component labels."""
        labels = torch.multinomial(self.weights, num_samples, replacement=True, generator=generator)
        noise = torch.randn(num_samples, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[labels] + self.variances[labels].sqrt() * noise, labels

    def classify(self, x):
        """Most likely component of each data sample."""
        return self._component_log_probs(x.to(torch.float64), 1.0, 0.0)[0].argmax(1)

    def fidelity(self, samples):
        """How well ``samples`` (B, D) reproduce the mixture.

        Returns a dict with ``variance_ratio`` (mean of (x - mu_k)^2 / v_k over samples assigned to their component:
        1 for exact samples; the sensitive check of a sampler), ``mode_weights`` (share of samples per component) and
        ``mode_weight_error`` (largest absolute gap to the true weights).
        """
        samples = samples.to(torch.float64)
        labels = self.classify(samples)
        ratio = ((samples - self.means[labels]) ** 2 / self.variances[labels]).mean().item()
        counts = torch.bincount(labels, minlength=len(self.weights)).to(torch.float64)
        shares = counts / counts.sum()
        return {
            "variance_ratio": ratio,
            "mode_weights": shares.tolist(),
            "mode_weight_error": (shares - self.weights).abs().max().item(),
        }


class GaussianMixtureModel(ModelMixin, ConfigMixin):
    """The exact network for a Gaussian-mixture data distribution, as a diffusers model.

    It is fed exactly what a ``UNet2DModel`` is fed (a (B, C, H, W) sample and the scheduler's network time) and
    returns a ``UNet2DOutput`` in the configured ``prediction_type``, so samplers, pipelines and save/load treat it
    as a real network. Its mixture parameters are buffers and travel in the safetensors file.

    Args:
        in_channels (`int`), sample_size (`int` or `tuple[int, int]`): the sample shape, named as in ``UNet2DModel``.
        num_components (`int`): K.
        sde_type, sigma_min, sigma_max, beta_min, beta_max, num_train_timesteps: the SDE, as in the schedulers.
        prediction_type (`str`), timestep_type (`str`): the parameterization it imitates.
    """

    @register_to_config
    def __init__(self, in_channels=1, sample_size=4, num_components=3, sde_type="ve", sigma_min=0.01, sigma_max=50.0,
                 beta_min=0.1, beta_max=20.0, num_train_timesteps=1000, prediction_type="score", timestep_type="sigma"):
        super().__init__()
        height, width = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
        dim = in_channels * height * width
        self.register_buffer("weights", torch.full((num_components,), 1.0 / num_components, dtype=torch.float64))
        self.register_buffer("means", torch.zeros(num_components, dim, dtype=torch.float64))
        self.register_buffer("variances", torch.ones(num_components, dim, dtype=torch.float64))
        self.sde = make_sde(sde_type, sigma_min, sigma_max, beta_min, beta_max)
        self.parameterization = Parameterization(self.sde, prediction_type, timestep_type, num_train_timesteps)

    @classmethod
    def from_mixture(cls, mixture, in_channels, sample_size, **config):
        model = cls(in_channels=in_channels, sample_size=sample_size, num_components=len(mixture.weights), **config)
        model.weights.copy_(mixture.weights)
        model.means.copy_(mixture.means)
        model.variances.copy_(mixture.variances)
        return model

    @classmethod
    def for_scheduler(cls, mixture, scheduler, in_channels, sample_size):
        """The exact network for ``mixture`` speaking ``scheduler``'s SDE and parameterization."""
        config = scheduler.config
        names = ("sde_type", "sigma_min", "sigma_max", "beta_min", "beta_max", "num_train_timesteps",
                 "prediction_type", "timestep_type")
        return cls.from_mixture(mixture, in_channels, sample_size, **{name: config[name] for name in names})

    @property
    def mixture(self):
        return GaussianMixture(self.weights, self.means, self.variances)

    def _kernel(self, sample, timestep):
        """The flattened sample in float64 and the kernel coefficients (a, s) at the network time ``timestep``."""
        t = self.parameterization.time_from_model_time(torch.as_tensor(timestep, dtype=torch.float64))
        a, s = self.parameterization.marginal(t.reshape(-1, 1))  # the kernel its parameterization names
        return sample.flatten(1).to(torch.float64), a, s

    def _output(self, score, x, a, s, sample, return_dict):
        output = self.parameterization.output_from_score(score, x, a, s).view_as(sample).to(sample.dtype)
        return UNet2DOutput(sample=output) if return_dict else (output,)

    def forward(self, sample, timestep, return_dict=True):
        x, a, s = self._kernel(sample, timestep)
        return self._output(self.mixture.score(x, a, s), x, a, s, sample, return_dict)


class ConditionalGaussianMixtureModel(GaussianMixtureModel):
    """The exact class-conditional network of a mixture whose components are the classes, in the classifier-free
    guidance convention: ``num_class_embeds = K + 1`` (in its config, as a ``UNet2DModel`` has it); label k < K gives
    the score of component k alone, label K (the unconditional one) the mixture's score.

    Args: as :class:`GaussianMixtureModel`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_to_config(num_class_embeds=self.config.num_components + 1, class_embed_type=None)

    def forward(self, sample, timestep, class_labels=None, return_dict=True):
        if class_labels is None:
            raise ValueError("class_labels should be provided when doing class conditioning")  # as UNet2DModel says
        x, a, s = self._kernel(sample, timestep)
        labels = torch.as_tensor(class_labels, device=sample.device).reshape(-1).expand(sample.shape[0])
        unconditional = labels == self.config.num_components
        component = self.mixture.component_score(x, labels.clamp(max=self.config.num_components - 1), a, s)
        score = torch.where(unconditional[:, None], self.mixture.score(x, a, s), component)
        return self._output(score, x, a, s, sample, return_dict)


class GaussianMixtureClassifier(GaussianMixtureModel):
    """The exact noise-conditional classifier of a mixture's components, fed exactly what the score network is fed:
    its logits are log p_t(k | x) (a ``UNet2DOutput``-free tensor output, as classifier guidance takes it).

    Args: as :class:`GaussianMixtureModel`; ``num_classes`` in its config is K.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_to_config(num_classes=self.config.num_components)

    def forward(self, sample, timestep, return_dict=True):
        x, a, s = self._kernel(sample, timestep)
        logits = self.mixture.component_log_posterior(x, a, s)
        return logits if return_dict else (logits,)


class GaussianMixturePosterior:
    """The exact posterior of a diagonal mixture observed through y = A x + n, n ~ N(0, r^2 I): again a mixture, with
    per-measurement weights and means and per-component covariances (REFERENCE: conditional sampling).

    Component k has weight proportional to w_k N(y; A m_k, S_k) with S_k = A V_k A^T + r^2 I, mean
    m_k + V_k A^T S_k^-1 (y - A m_k) and covariance V_k - V_k A^T S_k^-1 A V_k (singular in the directions a noiseless
    measurement fixes).

    Args:
        mixture (`GaussianMixture`): the prior.
        matrix (`torch.Tensor`): A, (M, D).
        measurement (`torch.Tensor`): y, (B, M).
        noise_std (`float`): r >= 0.
    """

    def __init__(self, mixture, matrix, measurement, noise_std):
        a = matrix.to(torch.float64)
        y = measurement.to(torch.float64).flatten(1)
        prior_cov = torch.diag_embed(mixture.variances)  # (K, D, D)
        innovation = a @ prior_cov @ a.T + noise_std**2 * torch.eye(a.shape[0], dtype=torch.float64)  # S_k
        gain = prior_cov @ a.T @ torch.linalg.inv(innovation)  # (K, D, M)
        predicted = mixture.means @ a.T  # (K, M)
        residual = y[:, None, :] - predicted[None]  # (B, K, M)
        log_normal = torch.distributions.MultivariateNormal(torch.zeros_like(predicted), innovation).log_prob(residual)
        self.weights = torch.softmax(torch.log(mixture.weights)[None] + log_normal, dim=1)  # (B, K)
        self.means = mixture.means[None] + torch.einsum("kdm,bkm->bkd", gain, residual)  # (B, K, D)
        self.covariances = prior_cov - gain @ a @ prior_cov  # (K, D, D)
        eigenvalues, eigenvectors = torch.linalg.eigh(self.covariances)
        self._range = eigenvalues > eigenvalues.amax(dim=1, keepdim=True) * 1e-9
        self._eigenvalues, self._eigenvectors = eigenvalues.clamp(min=1e-300), eigenvectors

    def _whitened(self, samples):
        """(B, K, D) coordinates of each sample in each component's eigenbasis, scaled to unit variance (0 off-range)."""
        diff = samples.to(torch.float64)[:, None, :] - self.means
        coordinates = torch.einsum("kde,bkd->bke", self._eigenvectors, diff) / self._eigenvalues.sqrt()[None]
        return torch.where(self._range[None], coordinates, torch.zeros_like(coordinates))

    def fidelity(self, samples):
        """How well ``samples`` (B, D), one per measurement row, follow the posterior.

        Returns ``variance_ratio`` (mean squared Mahalanobis distance per free dimension to the assigned component; 1
        for exact samples), ``mode_weight_error`` (largest gap between the share of samples assigned to a component and
        its mean posterior weight) and ``observed_error`` (largest distance, in the fixed directions, from the
        component mean: 0 when the measurement is reproduced exactly).
        """
        whitened = self._whitened(samples)
        log_density = -0.5 * (whitened.pow(2) + torch.log(2 * math.pi * self._eigenvalues)[None] * self._range[None]).sum(-1)
        labels = (torch.log(self.weights) + log_density).argmax(1)
        rows = torch.arange(len(samples))
        chosen = whitened[rows, labels]
        ratio = chosen.pow(2).sum() / self._range[labels].sum()
        shares = torch.bincount(labels, minlength=self.weights.shape[1]).to(torch.float64) / len(samples)
        diff = samples.to(torch.float64) - self.means[rows, labels]
        fixed = torch.einsum("bde,bd->be", self._eigenvectors[labels], diff).abs() * (~self._range[labels])
        return {
            "variance_ratio": ratio.item(),
            "mode_weight_error": (shares - self.weights.mean(0)).abs().max().item(),
            "observed_error": fixed.max().item(),
        }
