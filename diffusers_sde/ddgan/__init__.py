"""Denoising Diffusion GANs (Xiao et al., ICLR 2022): a few-step chain whose denoising steps are a conditional GAN."""

from .scheduling_ddgan import DDGANScheduler, DDGANSchedulerOutput

__all__ = ["DDGANScheduler", "DDGANSchedulerOutput"]
