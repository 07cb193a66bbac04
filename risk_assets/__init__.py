"""Dagster code location that builds the wildfire-risk raster region by region into Icechunk."""
