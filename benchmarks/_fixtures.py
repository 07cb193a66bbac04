"""Synthetic fixtures shared by the benchmarks that need many regions but no real data."""

from pathlib import Path

from resources.target import InputsResource
from risk_model.grid import GridSpec, RegionRegistry


def square_registry(n_regions: int) -> RegionRegistry:
    """About ``n_regions`` regions of 8 x 8 pixels on a square synthetic grid."""
    side = int(n_regions**0.5)
    grid = GridSpec(
        name="bench",
        crs="EPSG:4326",
        transform=(0.001, 0.0, -120.0, 0.0, 0.001, 35.0),
        shape=(side * 8, side * 8),
        chunks=(8, 8),
    )
    return RegionRegistry(grid, [f"y{iy}_x{ix}" for iy in range(side) for ix in range(side)])


def stand_in_inputs(directory: Path) -> InputsResource:
    """Three small files as the inputs: what is timed only hashes them, never reads them as rasters."""
    files = {name: directory / f"{name}.bin" for name in ("burn_probability", "conditional_risk", "wind_direction")}
    for name, path in files.items():
        path.write_bytes(name.encode() * 1000)
    return InputsResource(**{name: str(path) for name, path in files.items()})
