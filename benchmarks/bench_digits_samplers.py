"""Sample quality of the embedded digits model against network evaluations (NFE), for every sampler of the project:
the digits judge's Frechet distance (``diffusers_sde.evaluation.DigitsQuality``) at a few NFE budgets, over several
seeds, with the judge's own reference line (the 500 real held-out digits against the train split it compares to).

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_digits_samplers.py \
        [--budgets 10 20 50 100] [--seeds 3] [--samples 500] [--only LABEL ...] [--results runs.json] \
        [--plot docs/images/digits_fd_vs_nfe.png]
    .venv/bin/python benchmarks/bench_digits_samplers.py --from-results a.json b.json [--plot PNG]  # merge saved runs

A fixed-step sampler runs at the largest step count whose NFE does not pass the budget (Heun-type samplers cost
2 N - 1, so an even budget gets budget - 1: the table shows the actual NFE). The adaptive solvers choose their own steps
and run once per seed at their tolerance. Prints a markdown table (the one in docs/fast_samplers.md): mean and
standard deviation of the Frechet distance over the seeds.

Adding a sampler is one line in :data:`SAMPLERS`.
"""

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from diffusers_sde import (
    EDMHeunScheduler,
    ERSDEScheduler,
    ExponentialIntegratorScheduler,
    PredictorCorrectorScheduler,
    ProbabilityFlowScheduler,
    RestartScheduler,
    ScoreSDEPipeline,
    SDEDPMSolverScheduler,
    UniPCScheduler,
    pretrained_model_path,
)
from diffusers_sde.evaluation import DigitsQuality
from diffusers_sde.training.data import DIGITS_GREY_LEVELS, digits_split


@dataclass(eq=False)  # rows are dict keys, by identity
class Sampler:
    """One row of the benchmark.

    Args:
        label (`str`): the row's name.
        scheduler (`Callable`, *optional*): config -> scheduler, built from the model's own scheduler config; None keeps
            the model's scheduler (an adaptive solver only reads the SDE from it).
        call (`dict`): extra ``pipe(...)`` keywords; a ``sampler`` among them makes the row adaptive (own NFE).
    """

    label: str
    scheduler: Optional[Callable] = None
    call: dict = field(default_factory=dict)

    @property
    def adaptive(self):
        return "sampler" in self.call


def _pc(predictor):
    return lambda config: PredictorCorrectorScheduler.from_config(config, predictor=predictor, corrector="none")


def _from(scheduler_class, **options):
    return lambda config: scheduler_class.from_config(config, **options)


SAMPLERS = [
    Sampler("PC Euler-Maruyama (no corrector)", _pc("euler_maruyama")),
    Sampler("PC reverse diffusion (no corrector)", _pc("reverse_diffusion")),
    Sampler("probability flow Euler", _from(ProbabilityFlowScheduler, integrator="euler")),
    Sampler("probability flow Heun", _from(ProbabilityFlowScheduler, integrator="heun")),
    Sampler("exponential integrator 1 (DDIM)", _from(ExponentialIntegratorScheduler, solver_order=1)),
    Sampler("exponential integrator 2M", _from(ExponentialIntegratorScheduler, solver_order=2)),
    Sampler("exponential integrator 3M", _from(ExponentialIntegratorScheduler, solver_order=3)),
    Sampler("SDE-DPM-Solver++ 1S", _from(SDEDPMSolverScheduler, solver_order=1)),
    Sampler("SDE-DPM-Solver++ 2M", _from(SDEDPMSolverScheduler, solver_order=2)),
    Sampler("SDE-DPM-Solver++ 3M", _from(SDEDPMSolverScheduler, solver_order=3)),
    Sampler("EDM Heun (Karras rho 7)", _from(EDMHeunScheduler)),
    Sampler("EDM Heun, churn 5", _from(EDMHeunScheduler, s_churn=5.0)),
    Sampler("Restart (paper's interval)", _from(RestartScheduler)),
    Sampler("ER-SDE-Solver-3 (er_sde_5)", _from(ERSDEScheduler)),
    Sampler("UniPC-2 (UniC)", _from(UniPCScheduler, solver_order=2)),
    Sampler("UniPC-2 bh1 (UniC)", _from(UniPCScheduler, solver_order=2, solver_type="bh1")),
    Sampler("UniPC-3 (UniC)", _from(UniPCScheduler, solver_order=3)),
    Sampler("adaptive RK45, rtol 1e-3", call=dict(sampler="adaptive_ode", rtol=1e-3, atol=1e-3)),
    Sampler("adaptive RK45, rtol 1e-5 (default)", call=dict(sampler="adaptive_ode")),
    Sampler("Gotta Go Fast, rtol 0.05", call=dict(sampler="gotta_go_fast", rtol=0.05)),
    Sampler("Gotta Go Fast, rtol 0.01 (default)", call=dict(sampler="gotta_go_fast")),
]


def steps_for_budget(scheduler, budget):
    """The largest ``num_inference_steps`` whose run costs at most ``budget`` evaluations (len(timesteps)), or None."""
    best = None
    package_logger = logging.getLogger("diffusers_sde")
    level = package_logger.level
    package_logger.setLevel(logging.ERROR)  # Restart warns for every step count too small for its intervals
    try:
        for steps in range(1, budget + 1):
            scheduler.set_timesteps(steps)
            if len(scheduler.timesteps) > budget:
                break
            best = steps
    finally:
        package_logger.setLevel(level)
    return best


def run_cell(pipe, sampler, budget, seed, samples, quality):
    """Frechet distance, class coverage and NFE of one (sampler, budget, seed), or None when the budget is too small."""
    options = dict(sampler.call)
    if not sampler.adaptive:
        steps = steps_for_budget(pipe.scheduler, budget)
        if steps is None:
            return None
        options["num_inference_steps"] = steps
    output = pipe(batch_size=samples, generator=torch.Generator().manual_seed(seed), output_type="np", **options)
    result = quality.evaluate(output.images[..., 0])
    return result["frechet_distance"], result["class_coverage"], int(output.nfe)


def _cell(runs):
    """'mean ± sd' of the Frechet distance over the seeds, with '*' where a run missed a class."""
    distances = [run[0] for run in runs]
    text = f"{np.mean(distances):.3f} ± {np.std(distances, ddof=1) if len(runs) > 1 else 0:.3f}"
    return text + ("*" if min(run[1] for run in runs) < 1 else "")


def _table(results, budgets, reference):
    header = "| sampler | " + " | ".join(f"{budget} NFE" for budget in budgets) + " | adaptive: own NFE |"
    lines = [header, "|---" * (len(budgets) + 2) + "|",
             f"| real held-out digits against the train split (judge's reference) | {reference:.3f} |"
             + " |" * len(budgets)]
    for sampler, cells in results.items():
        row = []
        for budget in budgets:
            runs = cells.get(budget)
            if runs is None or sampler.adaptive:
                row.append("")
                continue
            nfe = runs[0][2]
            row.append(_cell(runs) + ("" if nfe == budget else f" ({nfe})"))
        own = ""
        if sampler.adaptive and cells:
            runs = next(iter(cells.values()))
            own = f"{_cell(runs)} ({np.mean([run[2] for run in runs]):.0f})"
        lines.append(f"| {sampler.label} | " + " | ".join(row) + f" | {own} |")
    return "\n".join(lines)


def _plot(results, reference, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.cm.tab20(np.linspace(0, 1, 20))
    for index, (sampler, cells) in enumerate(results.items()):
        runs = [cells[budget] for budget in sorted(cells)]
        nfe = [np.mean([run[2] for run in cell]) for cell in runs]
        mean = [np.mean([run[0] for run in cell]) for cell in runs]
        spread = [np.std([run[0] for run in cell], ddof=1) if len(cell) > 1 else 0 for cell in runs]
        style = dict(marker="s", linestyle="none", markersize=7) if sampler.adaptive else dict(marker="o^vD"[index % 4],
                                                                                                 markersize=3)
        axis.errorbar(nfe, mean, yerr=spread, label=sampler.label, capsize=2, linewidth=1, color=colors[index % 20],
                      **style)
    axis.axhline(reference, color="black", linestyle="--", linewidth=1, label="real held-out digits")
    axis.set(xscale="log", yscale="log", xlabel="network evaluations (NFE)", ylabel="Frechet distance (digits judge)",
             title="digits-vp: Frechet distance against NFE (mean ± sd over seeds)")
    axis.legend(fontsize=6, ncol=2, loc="upper right")
    figure.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = path + ".tmp.png"
    figure.savefig(temporary, dpi=110)
    os.replace(temporary, path)


def _save(results, reference, path):
    """Write the results so far as JSON, atomically: every row's cells, (Frechet distance, coverage, NFE) per seed."""
    rows = [{"label": sampler.label, "adaptive": sampler.adaptive, "cells": {str(budget): runs for budget, runs in
             cells.items()}} for sampler, cells in results.items()]
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump({"reference": reference, "rows": rows}, handle, indent=1)
    os.replace(temporary, path)


def _load(paths):
    """Results and the reference line from ``--results`` files, merged (a later file's cells replace earlier ones)."""
    cells_by_label, adaptive, reference = {}, {}, None
    for path in paths:
        with open(path) as handle:
            saved = json.load(handle)
        reference = saved["reference"]
        for row in saved["rows"]:
            adaptive[row["label"]] = row["adaptive"]
            cells = cells_by_label.setdefault(row["label"], {})
            cells.update({int(budget): [tuple(run) for run in runs] for budget, runs in row["cells"].items()})
    order = [sampler.label for sampler in SAMPLERS]
    labels = sorted(cells_by_label, key=lambda label: order.index(label) if label in order else len(order))
    # Rows rebuilt from their label: only ``adaptive`` matters for the table and the plot.
    return {Sampler(label, call={"sampler": "saved"} if adaptive[label] else {}): cells_by_label[label]
            for label in labels}, reference


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=pretrained_model_path("digits-vp"))
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 50, 100])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. seeds - 1")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--only", nargs="+", default=None, help="run only rows whose label contains one of these")
    parser.add_argument("--plot", default=None, help="write a PNG of Frechet distance against NFE here")
    parser.add_argument("--results", default=None, help="write the results as JSON here (after every row)")
    parser.add_argument("--from-results", nargs="+", default=None, metavar="JSON",
                        help="run nothing: print the table (and --plot) of these --results files, merged")
    args = parser.parse_args()
    if min(args.budgets) < 1 or args.seeds < 1 or args.samples < 2:
        parser.error(f"--budgets must be >= 1, --seeds >= 1 and --samples >= 2; got {args.budgets}, {args.seeds},"
                     f" {args.samples}.")
    if args.from_results:
        results, reference = _load(args.from_results)
        budgets = sorted({budget for cells in results.values() for budget in cells if budget in args.budgets})
        print(_table(results, budgets, reference))
        if args.plot:
            _plot(results, reference, args.plot)
        return
    torch.set_num_threads(1)

    quality = DigitsQuality()
    heldout, _ = digits_split("heldout")
    reference = quality.evaluate(heldout / DIGITS_GREY_LEVELS)["frechet_distance"]
    print(f"judge's reference: {len(heldout)} real held-out digits against the train split: {reference:.3f}",
          flush=True)

    pipe = ScoreSDEPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    config = pipe.scheduler.config
    model_scheduler = pipe.scheduler
    rows = [sampler for sampler in SAMPLERS if args.only is None or any(word in sampler.label for word in args.only)]
    results = {}
    for sampler in rows:
        pipe.scheduler = model_scheduler if sampler.scheduler is None else sampler.scheduler(config)
        results[sampler] = {}
        for budget in args.budgets[:1] if sampler.adaptive else args.budgets:
            start = time.perf_counter()
            runs = [run_cell(pipe, sampler, budget, seed, args.samples, quality) for seed in range(args.seeds)]
            if runs[0] is None:
                continue
            results[sampler][budget] = runs
            print(f"{sampler.label}, budget {budget}: NFE {[run[2] for run in runs]}, Frechet distance"
                  f" {[round(run[0], 4) for run in runs]}, coverage {[run[1] for run in runs]},"
                  f" {time.perf_counter() - start:.0f} s", flush=True)
            if args.results:
                _save(results, reference, args.results)
    print()
    print(_table(results, args.budgets, reference))
    if args.plot:
        _plot(results, reference, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
