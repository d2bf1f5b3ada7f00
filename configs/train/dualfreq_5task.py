"""DualFreq all-in-one, 5 degradations (the paper's claim; the IDR/AdaIR five-task setting): the
three of `dualfreq_3task` plus motion deblurring (GoPro pairs) and low-light enhancement (LOL pairs),
same schedule. Provide `data.sources.3.*` (GoPro sharp / blurred) and `data.sources.4.*` (LOL normal
/ low). Variants as in `dualfreq_3task` (`cpu` and `tiny` use on-the-fly blur and low light).
"""
from __future__ import annotations

from . import dualfreq_3task


def get_config(arg=None):
  return dualfreq_3task.get_config(arg, tasks=('rain100l', 'ots', 'gopro', 'lol'))
