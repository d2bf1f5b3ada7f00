"""See tests/shims/torchvision/__init__.py: names spandrel imports, none of them usable."""
import enum


class InterpolationMode(enum.Enum):
  NEAREST = 'nearest'
  BILINEAR = 'bilinear'
  BICUBIC = 'bicubic'


def _unavailable(*args, **kwargs):
  raise RuntimeError('torchvision is not installed: this is the jaxrestore test shim, which only '
                     'lets spandrel import; install torchvision to use LaMa/RestoreFormer')


rotate = normalize = _unavailable
