"""Presets: one public dataset each, read in the folder layout and mask encoding it is published
with (``mucald_convert preset NAME``). ``PRESETS`` maps the CLI name to the preset class.
"""

from __future__ import annotations

from preprocessing.convert.common import ConversionResult
from preprocessing.convert.presets.base import Preset, PresetConfig
from preprocessing.convert.presets.blastocyst import Blastocyst
from preprocessing.convert.presets.hc18 import HC18
from preprocessing.convert.presets.ham10000 import HAM10000
from preprocessing.convert.presets.kvasir import KvasirSEG
from preprocessing.convert.presets.mosmed import MosMed
from preprocessing.convert.presets.writer import convert_with_preset
from preprocessing.errors import DatasetError

PRESETS: dict[str, type[Preset]] = {cls.key: cls for cls in (KvasirSEG, HAM10000, HC18, MosMed,
                                                             Blastocyst)}


def convert_preset(key: str, config: PresetConfig) -> ConversionResult:
    """Convert the dataset ``key`` found at ``config.source``; DatasetError for an unknown key."""
    if key not in PRESETS:
        raise DatasetError(f"unknown preset {key!r}. Fix: use one of {', '.join(PRESETS)}.")
    preset = PRESETS[key](config.unlabelled_to_test)
    return convert_with_preset(preset, config)


def default_name(key: str) -> str:
    """The dataset name used when --name is not given."""
    if key not in PRESETS:
        raise DatasetError(f"unknown preset {key!r}. Fix: use one of {', '.join(PRESETS)}.")
    return PRESETS[key].default_name


__all__ = ["PRESETS", "PresetConfig", "convert_preset", "default_name"]
