"""Which scheduler to use per SDE and network-evaluation budget: one table, rendered for docs/fast_samplers.md
(markdown) and for ``diffusers-sde sample --help`` (text).

The figures are |variance ratio - 1| of the worst of 3 seeds on the issue-12 benchmark (64-D, 10-component Gaussian
mixtures with an exact score, ``benchmarks/bench_samplers_vs_peers.py``); "within 1% from N" means every larger budget
stays within 1%.
"""

from .scheduling_er_sde import ERSDEScheduler
from .scheduling_exponential_integrator import ExponentialIntegratorScheduler
from .scheduling_unipc import UniPCScheduler

SDES = ("ve", "vp", "subvp")
SDE_TITLES = {"ve": "VE", "vp": "VP", "subvp": "sub-VP"}

# (NFE budget, {SDE: (choices, why)}); a choice is (scheduler class, options beyond its defaults), the first preferred.
RECOMMENDED_SCHEDULERS = (
    ("10-15", {
        "ve": (((ExponentialIntegratorScheduler, {}), (UniPCScheduler, {})),
               "EI 4.5% at 10, 5.5% at 15; UniPC 7.1%, 3.8%"),
        "vp": (((UniPCScheduler, {}), (ExponentialIntegratorScheduler, {})), "UniPC 3.9% at 10, 5.6% at 15; EI 7.8%, 5.9%"),
        "subvp": (((UniPCScheduler, {}),), "18% at 10, 6.0% at 15; EI 45%, 9.6%; k-diffusion `lms` 24% at 10"),
    }),
    ("20-30", {
        "ve": (((UniPCScheduler, {}),), "default order 3 + UniC; 1.4% at 20, within 1% from 25"),
        "vp": (((UniPCScheduler, {}),), "2.0% at 20, within 1% from 25"),
        "subvp": (((UniPCScheduler, {}),), "0.8% at 20, within 1% from 20"),
    }),
    ("40+", {
        "ve": (((UniPCScheduler, {}), (ExponentialIntegratorScheduler, {})), "EI 3M within 1% from 30"),
        "vp": (((UniPCScheduler, {}), (ExponentialIntegratorScheduler, {})), "EI 3M within 1% from 40"),
        "subvp": (((UniPCScheduler, {}), (ExponentialIntegratorScheduler, {})), "EI 3M within 1% from 40"),
    }),
    ("stochastic (imperfect networks, VE checkpoints)", {
        "ve": (((ERSDEScheduler, {}),), "default, within 1% from 30"),
        "vp": (((ERSDEScheduler, {}),), "within 1% from 30"),
        "subvp": (((ERSDEScheduler, {}),), "within 1% from 40"),
    }),
)


def _call(scheduler_class, options):
    arguments = ", ".join(f"{name}={value!r}" for name, value in options.items())
    return f"{scheduler_class.__name__}({arguments})" if options else scheduler_class.__name__


def recommended_schedulers_markdown():
    """The table as docs/fast_samplers.md shows it (a test checks that the page holds exactly this text)."""
    lines = ["| NFE budget | " + " | ".join(SDE_TITLES[sde] for sde in SDES) + " |", "|---" * (len(SDES) + 1) + "|"]
    for budget, cells in RECOMMENDED_SCHEDULERS:
        row = []
        for sde in SDES:
            choices, why = cells[sde]
            row.append(" or ".join(f"`{_call(*choice)}`" for choice in choices) + f" ({why})")
        lines.append(f"| {budget} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def recommended_samplers_text(sampler_names):
    """The table for a terminal, naming each scheduler by its command-line ``--sampler`` name.

    Args:
        sampler_names (`dict`): ``--sampler`` name -> scheduler class (the CLI's ``SCHEDULER_SAMPLERS``).
    """
    names = {scheduler_class: name for name, scheduler_class in sampler_names.items()}

    def choice_text(scheduler_class, options):
        text = names[scheduler_class]
        return text + (f" [Python: {_call(scheduler_class, options)}]" if options else "")

    lines = ["which sampler, per SDE and NFE budget (docs/fast_samplers.md); in parentheses the worst-seed",
             "error of the sample variance on 64-D Gaussian mixtures with an exact score:"]
    for budget, cells in RECOMMENDED_SCHEDULERS:
        lines.append(f"  {budget}{' NFE' if budget[0].isdigit() else ''}:")
        for sde in SDES:
            choices, why = cells[sde]
            choices_text = " or ".join(choice_text(*choice) for choice in choices)
            lines.append(f"    {SDE_TITLES[sde] + ':':<8}{choices_text} ({why})")
    return "\n".join(lines)
