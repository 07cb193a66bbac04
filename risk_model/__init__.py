"""The wildfire-risk model: grids, parameters, versions, the science, input reading and pictures.

The bottom layer: pure Python, numpy, xarray and rasterio. Nothing here imports Dagster or
Icechunk (import-linter's contracts in ``pyproject.toml`` hold that).
"""
