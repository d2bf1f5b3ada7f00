"""See tests/shims/torchvision/__init__.py."""
