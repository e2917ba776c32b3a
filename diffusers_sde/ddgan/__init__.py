"""Denoising Diffusion GANs (Xiao et al., ICLR 2022): a few-step chain whose denoising steps are a conditional GAN."""

from .losses import discriminator_loss, generator_loss, r1_norm, sample_fake_previous, sample_real_pairs
from .models import DDGANDiscriminator, DDGANGenerator
from .pipeline_ddgan import DDGANPipeline
from .scheduling_ddgan import DDGANScheduler, DDGANSchedulerOutput
from .training import DDGANTrainingConfig, train_ddgan

__all__ = ["DDGANDiscriminator", "DDGANGenerator", "DDGANPipeline", "DDGANScheduler", "DDGANSchedulerOutput",
           "DDGANTrainingConfig", "train_ddgan", "discriminator_loss", "generator_loss", "r1_norm",
           "sample_fake_previous", "sample_real_pairs"]
