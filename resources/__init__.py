"""Resources of the risk raster: Icechunk storage and the region-writing IO manager."""
