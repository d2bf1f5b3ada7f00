"""HAIR preset: the 3-degradation all-in-one model released with toummHus/HAIR (`hair3d.ckpt`).

Evaluated with the all-in-one protocol (`jaxrestore.eval.allinone`). The Lightning checkpoint
stores the network as `state_dict` with a `net.` prefix. The 5-degradation model of the paper is
not released in that repository.
"""
from __future__ import annotations

from .presets import Preset

HAIR_3D = dict(inp_channels=3, out_channels=3, dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4,
               heads=(1, 2, 4, 8), ffn_expansion_factor=2.66, bias=False, LayerNorm_type='WithBias')


def hair_presets() -> list[Preset]:
  return [Preset(
      name='hair-3d', architecture='hair', hyperparameters=dict(HAIR_3D), task='all_in_one', channels=3,
      checkpoint_file='hair3d.ckpt', checkpoint_key='state_dict',
      weights_url='https://drive.google.com/file/d/1Zr0gy8MPFI6q0rytGXuqyqLKrk8bBeQg/view',
      weights_license='no licence file in toummHus/HAIR (all rights reserved unless the authors say otherwise)',
      notes='all-in-one, 3 degradations: denoise (BSD68, sigma 15/25/50), derain (Rain100L), '
            'dehaze (SOTS outdoor); H, W multiples of 8 and >= 32 (pad_to_multiple=True pads)')]
