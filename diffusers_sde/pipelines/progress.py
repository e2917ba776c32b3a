"""A progress bar over SDE time for the solvers that choose their own steps (adaptive ODE / SDE solvers, torchsde)."""

from contextlib import contextmanager

import torch

_UNITS = 1000  # the bar counts thousandths of the time interval


@contextmanager
def time_progress(pipe, score_fn, t_start, t_end, description):
    """Yield ``score_fn`` wrapped to advance ``pipe``'s progress bar (diffusers' ``pipe.progress_bar``, so
    ``set_progress_bar_config`` applies) to the furthest point of [t_start, t_end] its slowest sample has reached."""
    bar = pipe.progress_bar(total=_UNITS)
    bar.set_description(description)
    span = abs(t_end - t_start)

    def score(x, t):
        remaining = (torch.as_tensor(t, dtype=torch.float64) - t_end).abs().max().item()
        reached = int(_UNITS * min(max(1 - remaining / span, 0.0), 1.0))
        if reached > bar.n:
            bar.update(reached - bar.n)
        return score_fn(x, t)

    try:
        yield score
        bar.update(_UNITS - bar.n)  # the solve reached t_end
    finally:
        bar.close()
