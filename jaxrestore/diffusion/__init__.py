"""Diffusion sampling and its post-processing: the IDDPM sampler DreamClear uses (`iddpm`) and the
colour correction it applies to the decoded image (`colorfix`)."""
from __future__ import annotations

from jaxrestore.diffusion.colorfix import adaptive_instance_normalization, wavelet_reconstruction
from jaxrestore.diffusion.iddpm import IDDPM, GaussianDiffusion, lre_start, space_timesteps

__all__ = ['IDDPM', 'GaussianDiffusion', 'lre_start', 'space_timesteps', 'wavelet_reconstruction',
           'adaptive_instance_normalization']
