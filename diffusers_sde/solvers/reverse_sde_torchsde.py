"""The reverse-time SDE (Song et al. 2021, Eq. 6) solved by torchsde, with per-sample seeding from torch generators.

torchsde integrates forward in time over 2-D states, so the reverse SDE dx = [f - g^2 score] dt + g dw_bar, t from 1
down to eps, is rewritten in u = -t (increasing from -1 to -eps): dx = [g^2 score - f] du + g dW_u, and images are
flattened to (batch, features). The diffusion g(t) does not depend on x, so the Ito and Stratonovich readings of the
SDE coincide and every torchsde method below solves the same equation.
"""

import warnings

import torch
import torchsde
from torchsde._brownian.brownian_base import BaseBrownian

from .noise_removal import remove_noise
from ..validation import check_choice, check_integer, check_positive
from .errors import MaxNFEExceededError

# method -> the SDE reading torchsde requires for it (identical here: g does not depend on x).
TORCHSDE_METHODS = {"euler": "ito", "milstein": "ito", "srk": "ito", "heun": "stratonovich", "midpoint": "stratonovich"}


class _ReverseSDE(torch.nn.Module):
    """The reverse SDE in u = -t on flattened states, in torchsde's interface (diagonal noise)."""

    noise_type = "diagonal"

    def __init__(self, sde, score_fn, shape, sde_type, max_nfe):
        super().__init__()
        self.sde_type = sde_type
        self._sde, self._score_fn, self._shape, self._max_nfe = sde, score_fn, shape, max_nfe
        self.nfe = 0

    def f(self, u, y):
        self.nfe += 1
        if self.nfe > self._max_nfe:
            raise MaxNFEExceededError(
                f"torchsde needed more than max_nfe={self._max_nfe} network evaluations (reached t={-float(u):.6g});"
                " loosen rtol/atol, give a larger dt, or raise max_nfe."
            )
        t = -u
        x = y.view(-1, *self._shape)
        return -self._sde.reverse_drift(x, t, self._score_fn(x, t)).flatten(1)  # Eq. 6, negated for u = -t

    def g(self, u, y):
        return self._sde.diffusion(-u).to(y.dtype).expand_as(y)


class _PerSampleBrownian(BaseBrownian):
    """One ``torchsde.BrownianInterval`` per sample, stacked: each sample's path depends on its own seed only."""

    __slots__ = ("_paths",)

    def __init__(self, paths):
        self._paths = paths

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        parts = [path(ta, tb, return_U=return_U, return_A=return_A) for path in self._paths]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat(group, dim=0) if group[0] is not None else None for group in zip(*parts))
        return torch.cat(parts, dim=0)

    def __repr__(self):
        return f"{type(self).__name__}(num_samples={len(self._paths)})"

    @property
    def dtype(self):
        return self._paths[0].dtype

    @property
    def device(self):
        return self._paths[0].device

    @property
    def shape(self):
        return torch.Size((len(self._paths), *self._paths[0].shape[1:]))

    @property
    def levy_area_approximation(self):
        return self._paths[0].levy_area_approximation


def levy_area_for(method):
    """The Levy-area approximation a torchsde method needs from its Brownian motion."""
    return "space-time" if method == "srk" else "none"


def _seed(generator):
    # Drawn on the generator's own device: a CUDA generator cannot feed a CPU draw.
    device = generator.device if generator is not None else None
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())


def brownian_motion(shape, t0, t1, generator=None, dt=None, levy_area_approximation="none", dtype=None, device=None):
    """A Brownian motion on [t0, t1] for a (batch, features) state, seeded from ``generator``.

    A list of generators gives each sample its own ``BrownianInterval`` seeded from its own generator, so a sample's
    path does not depend on the batch it is drawn in. ``None`` draws the seed from torch's global generator.
    """
    common = dict(t0=t0, t1=t1, dtype=dtype, device=device, dt=dt, levy_area_approximation=levy_area_approximation)
    if isinstance(generator, (list, tuple)):
        return _PerSampleBrownian(
            [torchsde.BrownianInterval(size=(1, shape[1]), entropy=_seed(g), **common) for g in generator]
        )
    return torchsde.BrownianInterval(size=tuple(shape), entropy=_seed(generator), **common)


def check_torchsde_arguments(method, num_steps, rtol, atol, dt):
    """Validate the torchsde solver's options (called where they enter: the pipeline or :func:`sample_reverse_sde`)."""
    check_choice("method", method, tuple(TORCHSDE_METHODS))
    for name, value in (("rtol", rtol), ("atol", atol), ("dt", dt)):
        if value is not None:
            check_positive(name, value)
    if num_steps is not None:
        check_integer("num_inference_steps", num_steps, minimum=1)


def sample_reverse_sde(sde, score_fn, latents, sampling_eps, method="euler", num_steps=1000, adaptive=False,
                       rtol=1e-2, atol=1e-2, dt=None, generator=None, max_nfe=100_000, brownian=None):
    """Integrate the reverse SDE from t = 1 to ``sampling_eps`` with torchsde, then remove the noise (Tweedie).

    Args:
        sde (`ScoreSDE`): the forward SDE.
        score_fn (`Callable`): ``score(x, t)`` for a (B, ...) batch at a scalar time t.
        latents (`torch.Tensor`): (B, ...) prior sample at t = 1.
        sampling_eps (`float`): last time of the integration.
        method (`str`): torchsde method, one of ``euler``, ``milstein``, ``srk`` (Ito) or ``heun``, ``midpoint``
            (Stratonovich); equivalent here because g does not depend on x.
        num_steps (`int`): fixed steps (the step is (1 - sampling_eps) / num_steps); the initial step when adaptive.
        adaptive (`bool`): torchsde's step doubling, one step size for the whole batch, with ``rtol`` / ``atol``.
        rtol (`float`), atol (`float`): tolerances of the adaptive solve.
        dt (`float`, *optional*): step size; overrides ``num_steps``. Also the Brownian interval's query hint.
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*): seeds the Brownian motion; a list gives
            one independent path per sample.
        max_nfe (`int`): stop with :class:`MaxNFEExceededError` past this many drift evaluations.
        brownian (*optional*): a Brownian motion on [-1, -sampling_eps] from :func:`brownian_motion` to reuse
            (e.g. to compare step sizes on one path); built from ``generator`` when omitted.

    Returns:
        `(torch.Tensor, int)`: the denoised sample and the number of network evaluations.
    """
    check_torchsde_arguments(method, num_steps, rtol, atol, dt)
    shape = latents.shape[1:]
    step = dt if dt is not None else (1.0 - sampling_eps) / num_steps
    reverse = _ReverseSDE(sde, score_fn, shape, TORCHSDE_METHODS[method], max_nfe)
    y0 = latents.flatten(1)
    times = torch.tensor([-1.0, -sampling_eps], dtype=y0.dtype, device=y0.device)
    # The Brownian interval spans exactly the (dtype-rounded) solve interval, or torchsde warns at its end.
    bm = brownian if brownian is not None else brownian_motion(
        y0.shape, times[0].item(), times[1].item(), generator, dt=step, dtype=y0.dtype, device=y0.device,
        levy_area_approximation=levy_area_for(method),
    )
    options = {"grad_free": True} if method == "milstein" else None  # dg/dx = 0: skip autograd
    with warnings.catch_warnings():
        # torchsde warns that adaptive Euler-Maruyama may not converge for non-additive noise; our noise is additive
        # (g depends on t only) but declared diagonal, since torchsde's "additive" type wants a (B, D, D) matrix.
        warnings.filterwarnings("ignore", message="Numerical solution is not guaranteed to converge")
        path = torchsde.sdeint(reverse, y0, times, bm=bm, method=method, dt=step, adaptive=adaptive, rtol=rtol,
                               atol=atol, options=options)
    x = path[-1].view_as(latents)
    return remove_noise(sde, x, score_fn(x, torch.tensor(sampling_eps, dtype=x.dtype)), sampling_eps), reverse.nfe + 1
