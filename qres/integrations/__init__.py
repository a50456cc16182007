"""qres inside other tools: a numcodecs codec, a zarr v3 codec and a Flower strategy.

Each module imports its host library; nothing here is loaded by ``import qres``.
"""
