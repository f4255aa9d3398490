"""How big each demo dataset is per size preset: one frozen table, nothing scattered."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class DatasetSize:
    """Case counts and spatial array shape (numpy order) of one demo dataset."""

    train: int
    test: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SizePreset:
    """One row of the table: the three datasets' sizes, looked up by recipe key."""

    polyp: DatasetSize
    lung_ct: DatasetSize
    fetal_us: DatasetSize

    def for_dataset(self, key: str) -> DatasetSize:
        return getattr(self, key)


PRESETS: MappingProxyType[str, SizePreset] = MappingProxyType({
    "tiny": SizePreset(polyp=DatasetSize(8, 2, (48, 48)),
                       lung_ct=DatasetSize(4, 2, (12, 40, 40)),
                       fetal_us=DatasetSize(8, 2, (48, 48))),
    "small": SizePreset(polyp=DatasetSize(60, 8, (128, 128)),
                        lung_ct=DatasetSize(30, 5, (20, 80, 80)),
                        fetal_us=DatasetSize(48, 8, (128, 128))),
    "medium": SizePreset(polyp=DatasetSize(200, 20, (256, 256)),
                         lung_ct=DatasetSize(60, 10, (32, 160, 160)),
                         fetal_us=DatasetSize(150, 20, (256, 256))),
})
SIZE_NAMES: tuple[str, ...] = tuple(PRESETS)


def preset(name: str) -> SizePreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown demo size {name!r}; use one of {', '.join(SIZE_NAMES)}") from None
