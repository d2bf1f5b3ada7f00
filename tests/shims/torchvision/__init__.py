"""Test-only stand-in for torchvision (see tests/conftest.py).

spandrel imports `torchvision.transforms.functional` at import time for its LaMa and
RestoreFormer architectures only; jaxrestore's parity tests never build those. Anything that
actually calls into this shim fails loudly.
"""
