"""Configs as code (installed as `jaxrestore.configs`): training recipes (`configs/train/`).

Model presets are declared beside their architecture, in `jaxrestore/models/<arch>.py`, and listed by
`jaxrestore.presets()`.
"""
