"""``pipe.unet = torch.compile(pipe.unet)``: the pipeline samples through a compiled network as through the eager one.

The suite compiles with ``backend="aot_eager"``: dynamo's graph capture and AOT autograd's tracing, as with inductor,
without inductor's code generation (minutes on a shared CPU; benchmarks/bench_compile.py measures it). The truth is the
eager network's output on the same noise."""

import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend

from testing_utils import tiny_unet
from diffusers_sde import SDEDPMSolverScheduler, ScoreSDEPipeline, UniPCScheduler


def _samples(pipe, scheduler):
    pipe.scheduler = scheduler
    generators = [torch.Generator().manual_seed(seed) for seed in range(3)]
    return pipe(batch_size=3, num_inference_steps=4, generator=generators, output_type="latent")


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile needs torch >= 2.0")
def test_compiled_unet_gives_the_eager_samples():
    torch._dynamo.reset()
    unet = tiny_unet()
    pipe = ScoreSDEPipeline(unet=unet, scheduler=UniPCScheduler(sde_type="vp"))
    pipe.set_progress_bar_config(disable=True)
    # An ODE sampler and a stochastic one (its noise comes from the generators, outside the compiled graph).
    schedulers = [UniPCScheduler(sde_type="vp"), SDEDPMSolverScheduler(sde_type="vp")]
    eager = [_samples(pipe, scheduler) for scheduler in schedulers]

    graphs = []

    def aot_eager_counting_graphs(graph_module, example_inputs):
        graphs.append(graph_module)
        return lookup_backend("aot_eager")(graph_module, example_inputs)

    pipe.unet = torch.compile(unet, backend=aot_eager_counting_graphs)
    assert pipe.unet is not unet and pipe.unet.config.sample_size == 8  # the config still reads through the wrapper
    for scheduler, expected in zip(schedulers, eager):
        compiled = _samples(pipe, scheduler)
        assert compiled.nfe == expected.nfe == 4
        torch.testing.assert_close(compiled.images, expected.images, rtol=1e-5, atol=1e-5)
    # The network ran as one captured graph (no graph break), compiled once for both samplers and every step.
    assert len(graphs) == 1
