"""PromptIR preset: the all-in-one model released with va1shn9v/PromptIR (`model.ckpt`).

Trained jointly on three degradations (Gaussian noise sigma 15/25/50, rain streaks, haze) and
evaluated with the all-in-one protocol (`jaxrestore.eval.allinone`, not the SwinIR protocol).
The Lightning checkpoint stores the network as `state_dict` with a `net.` prefix.
"""
from __future__ import annotations

from .presets import Preset

PROMPTIR_3D = dict(inp_channels=3, out_channels=3, dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4,
                   heads=(1, 2, 4, 8), ffn_expansion_factor=2.66, bias=False, LayerNorm_type='WithBias',
                   decoder=True)


def promptir_presets() -> list[Preset]:
  return [Preset(
      name='promptir-3d', architecture='promptir', hyperparameters=dict(PROMPTIR_3D), task='all_in_one',
      channels=3, checkpoint_file='model.ckpt', checkpoint_key='state_dict',
      weights_url='https://drive.google.com/file/d/1j-b5Od70pGF7oaCqKAfUzmf-N-xEAjYl/view',
      weights_license='Academic Public License, non-commercial (va1shn9v/PromptIR LICENSE.md)',
      notes='all-in-one, 3 degradations: denoise (BSD68, sigma 15/25/50), derain (Rain100L), '
            'dehaze (SOTS outdoor); H, W must be multiples of 8 (pad_to_multiple=True pads)')]
