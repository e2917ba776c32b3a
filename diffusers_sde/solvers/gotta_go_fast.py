"""The adaptive reverse-SDE solver of "Gotta Go Fast When Generating Data with Score-Based Models"
(Jolicoeur-Martineau et al. 2021, Alg. 1), for VE, VP and sub-VP.

Each iteration proposes an Euler-Maruyama step x' and an improved-Euler step x'' that reuses the same Brownian
increment; their gap, scaled by the mixed tolerance delta = max(atol, rtol max(|x'|, |x'_prev|)), is the local error
E = ||(x' - x'') / delta||_2 / sqrt(n). A step is accepted when E <= 1 (keeping the higher-order x''), and the next
step is h <- min(t - eps, safety h E^(-exponent)). Step sizes, errors and acceptances are per sample, so each sample
follows its own time grid and its result does not depend on the rest of the batch.

Unlike the published algorithm, a rejected step does not throw its Brownian increment away: each sample keeps the
part of its Brownian path it has already drawn ahead of its current time (:class:`_BrownianPaths`), and the shorter
retry takes its increment from that path by the Brownian bridge. Redrawing instead conditions the accepted noise on
having passed the error test, which favours large increments and inflates the variance (+1.5% in 64 dimensions and
+5-8% in 16 at the published tolerances, issue 4).
"""

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..validation import check_integer, check_positive
from .errors import MaxNFEExceededError
from .noise_removal import remove_noise

# Published defaults (the paper's released configs): h_init 0.01, rtol 0.01, atol 0.0078 (for data in [-1, 1]),
# safety 0.9, exponent r = 0.9; the error uses the previous proposal (error_use_prev) and the scaled L2 norm.
GOTTA_GO_FAST_DEFAULTS = dict(rtol=1e-2, atol=0.0078, h_init=1e-2, safety=0.9, exponent=0.9)


def _noise(shape, indices, generator, like):
    """Standard normal noise for the samples ``indices``; a list of generators draws each sample from its own."""
    if isinstance(generator, (list, tuple)):
        draws = [randn_tensor((1, *shape), generator=generator[i], device=like.device, dtype=like.dtype) for i in indices]
        return torch.cat(draws, dim=0)
    return randn_tensor((len(indices), *shape), generator=generator, device=like.device, dtype=like.dtype)


class _BrownianPaths:
    """Each sample's Brownian path ahead of its current time, as segments (length, increment) from that time on.

    A proposal of step h takes the path's increment over [0, h] (segments it covers whole, a Brownian-bridge split of
    the one it ends inside, fresh noise past the known part) and records the point h, so that a rejected step's
    retry, always shorter, splits the same path again; an accepted step drops the first segment.
    """

    def __init__(self, batch, shape, like):
        self.lengths = torch.zeros(batch, 0, dtype=torch.float64, device=like.device)
        self.increments = torch.zeros(batch, 0, *shape, dtype=like.dtype, device=like.device)

    def propose(self, active, step, noise):
        """The increment W(t - step) - W(t) for the samples ``active`` (in reverse time), with standard ``noise``."""
        lengths, increments = self.lengths[active], self.increments[active]
        view = (-1, *([1] * (increments.dim() - 2)))
        ends = lengths.cumsum(1)
        starts = ends - lengths
        count = (lengths > 0).sum(1)
        covered = (ends <= step[:, None]) & (lengths > 0)
        within = covered.sum(1)  # segments the step covers whole
        consumed = (covered.to(increments.dtype).view(*covered.shape, *view[1:]) * increments).sum(1)
        splits = within < count
        rows = torch.arange(len(active), device=step.device)
        index = within.clamp(max=max(lengths.shape[1] - 1, 0))
        if lengths.shape[1]:
            length, increment, offset = lengths[rows, index], increments[rows, index], step - starts[rows, index]
        else:
            length, increment, offset = torch.ones_like(step), torch.zeros_like(noise), torch.zeros_like(step)
        known = lengths.sum(1)
        # Brownian bridge inside the segment [0, length] at offset u: mean (u / length) W, variance u (length - u) / length.
        bridge_std = (offset * (length - offset) / length).clamp(min=0).sqrt()
        bridged = (offset / length).to(noise.dtype).view(view) * increment + bridge_std.to(noise.dtype).view(view) * noise
        fresh = (step - known).clamp(min=0).sqrt().to(noise.dtype).view(view) * noise
        part = torch.where(splits.view(view), bridged, fresh)
        dw = consumed + part
        # The refined path: the step's own segment, the split segment's remainder, then the untouched later segments.
        width = lengths.shape[1] + 2  # at most: the step, the split remainder and all but one old segment
        new_lengths = torch.zeros(len(active), width, dtype=lengths.dtype, device=lengths.device)
        new_increments = torch.zeros(len(active), width, *increments.shape[2:], dtype=increments.dtype,
                                     device=increments.device)
        new_lengths[:, 0], new_increments[:, 0] = step, dw
        new_lengths[:, 1] = torch.where(splits, length - offset, torch.zeros_like(step))
        new_increments[:, 1] = torch.where(splits.view(view), increment - part, torch.zeros_like(part))
        for column in range(2, width):
            source = index + column - 1
            keep = splits & (source < count)
            source = source.clamp(max=lengths.shape[1] - 1)
            new_lengths[:, column] = torch.where(keep, lengths[rows, source], torch.zeros_like(step))
            new_increments[:, column] = torch.where(keep.view(view), increments[rows, source],
                                                    torch.zeros_like(part))
        self._store(active, new_lengths, new_increments)
        return dw

    def advance(self, done):
        """The samples ``done`` accepted their step: their path now starts at its end."""
        self.lengths[done] = torch.cat([self.lengths[done, 1:], torch.zeros_like(self.lengths[done, :1])], 1)
        self.increments[done] = torch.cat([self.increments[done, 1:], torch.zeros_like(self.increments[done, :1])], 1)

    def _store(self, active, lengths, increments):
        grow = lengths.shape[1] - self.lengths.shape[1]
        if grow > 0:
            self.lengths = torch.cat([self.lengths, self.lengths.new_zeros(self.lengths.shape[0], grow)], 1)
            self.increments = torch.cat(
                [self.increments, self.increments.new_zeros(self.increments.shape[0], grow, *self.increments.shape[2:])],
                1)
        self.lengths[active], self.increments[active] = lengths, increments
        used = int((self.lengths > 0).sum(1).max())  # drop the columns no sample uses any more
        self.lengths, self.increments = self.lengths[:, :used], self.increments[:, :used]


def check_gotta_go_fast_arguments(rtol=None, atol=None, h_init=None, safety=None, exponent=None, max_nfe=10_000,
                                  min_step=1e-10):
    """Validate the solver's options where they enter (the pipeline or :func:`sample_gotta_go_fast`); ``None`` takes the
    published default. Returns the resolved options as a dict of keyword arguments."""
    given = dict(rtol=rtol, atol=atol, h_init=h_init, safety=safety, exponent=exponent)
    options = {name: GOTTA_GO_FAST_DEFAULTS[name] if value is None else value for name, value in given.items()}
    for name in ("rtol", "atol", "exponent"):
        options[name] = check_positive(name, options[name])
    for name in ("h_init", "safety"):
        options[name] = check_positive(name, options[name], maximum=1.0)
    options["min_step"] = check_positive("min_step", min_step)
    options["max_nfe"] = check_integer("max_nfe (one iteration takes 2 evaluations, the final denoising 1)", max_nfe,
                                       minimum=3)
    return options


def sample_gotta_go_fast(sde, score_fn, latents, sampling_eps, rtol=None, atol=None, h_init=None, safety=None,
                         exponent=None, generator=None, max_nfe=10_000, min_step=1e-10):
    """Sample the reverse SDE from t = 1 to ``sampling_eps`` with per-sample adaptive steps, then denoise (Tweedie).

    Args:
        sde (`ScoreSDE`): the forward SDE.
        score_fn (`Callable`): ``score(x, t)`` with t of shape (B,), see :func:`~diffusers_sde.solvers.probability_flow_ode.score_function`.
        latents (`torch.Tensor`): (B, ...) prior sample at t = 1.
        sampling_eps (`float`): end time of the integration (paper: 1e-5 VE, 1e-3 VP / sub-VP).
        rtol (`float`), atol (`float`): relative and absolute tolerances (default: the paper's 0.01 and 0.0078 for data
            in [-1, 1]; rtol 0.02-0.05 trades quality for speed).
        h_init (`float`): first step size (default 0.01).
        safety (`float`): safety factor theta in (0, 1] (default 0.9).
        exponent (`float`): r in h <- theta h E^-r (default 0.9).
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*): the Brownian increments; a list gives
            each sample its own stream.
        max_nfe (`int`): stop with :class:`MaxNFEExceededError` past this many (batched) network evaluations.
        min_step (`float`): stop with ``FloatingPointError`` when a rejected step shrinks below this.

    Returns:
        `(torch.Tensor, int)`: the denoised sample and the number of batched network evaluations.
    """
    options = check_gotta_go_fast_arguments(rtol, atol, h_init, safety, exponent, max_nfe, min_step)
    rtol, atol, h_init, safety, exponent, max_nfe, min_step = (
        options[name] for name in ("rtol", "atol", "h_init", "safety", "exponent", "max_nfe", "min_step"))
    shape = latents.shape[1:]
    view = (-1, *([1] * len(shape)))
    batch = latents.shape[0]
    x = latents.clone()
    x_prev = x.clone()  # the last accepted Euler-Maruyama proposal x'_prev of the error scale
    t = torch.ones(batch, dtype=torch.float64, device=x.device)
    h = torch.full_like(t, h_init)
    paths = _BrownianPaths(batch, shape, x)
    nfe = 0

    def evaluate(x_, t_):
        nonlocal nfe
        nfe += 1
        drift = sde.reverse_drift(x_, t_, score_fn(x_, t_)).to(x_.dtype)  # Eq. 6 at per-sample times
        return drift, sde.diffusion(t_).to(x_.dtype).view(view)

    while True:
        active = (t - sampling_eps > 1e-12 * sampling_eps).nonzero().flatten()
        if len(active) == 0:
            break
        if nfe + 3 > max_nfe:
            raise MaxNFEExceededError(
                f"gotta_go_fast needed more than max_nfe={max_nfe} network evaluations; {len(active)} sample(s) had"
                f" not reached sampling_eps={sampling_eps} (largest remaining t={t[active].max().item():.6g})."
                f" Raise rtol (got {rtol}) / atol (got {atol}) or max_nfe."
            )
        xa, ta = x[active], t[active]
        step = torch.minimum(h[active], ta - sampling_eps)
        dt = step.to(x.dtype).view(view)
        dw = paths.propose(active, step, _noise(shape, active.tolist(), generator, x))
        drift, g = evaluate(xa, ta)
        proposal = xa - dt * drift + g * dw  # Euler-Maruyama, reverse time
        drift_end, g_end = evaluate(proposal, ta - step)
        improved = xa - dt * 0.5 * (drift + drift_end) + 0.5 * (g + g_end) * dw  # improved Euler, same noise
        scale = torch.maximum(proposal.abs(), x_prev[active].abs()) * rtol
        delta = torch.clamp(scale, min=atol)
        error = ((proposal - improved) / delta).flatten(1).pow(2).mean(1).sqrt().to(torch.float64)
        accepted = error <= 1
        if bool(accepted.any()):
            done = active[accepted]
            x[done], x_prev[done] = improved[accepted], proposal[accepted]
            t[done] = ta[accepted] - step[accepted]
            paths.advance(done)
        new_step = safety * step * error.clamp(min=1e-16) ** -exponent
        rejected = ~accepted
        if bool((rejected & (new_step < min_step)).any()):
            stuck = ta[rejected & (new_step < min_step)].max().item()
            raise FloatingPointError(
                f"gotta_go_fast: the step size fell below min_step={min_step} at t={stuck:.6g} (error not reducible"
                f" at rtol={rtol}, atol={atol}); the score is likely non-finite or discontinuous there."
            )
        h[active] = new_step
    return remove_noise(sde, x, score_fn(x, torch.full_like(t, sampling_eps)), sampling_eps), nfe + 1
