"""Version of the model code: bump it when a change alters what a region computes.

It is the ``code_version`` of the raster asset and is recorded in every region commit; a
region committed under another code version is built again.
"""

MODEL_CODE_VERSION = "1"
