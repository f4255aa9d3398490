"""The half of every preset that does not depend on the dataset: case ids, the (grouped)
deterministic Tr/Ts split, what happens to unlabelled cases, content checks, staging, verify and
publish. One writer for 2D and volume presets, so they all fail and succeed the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from preprocessing.convert.common import (ConversionResult, Problems, check_image_content,
                                          describe_options, split_test_groups, unique_case_ids)
from preprocessing.convert.output import DatasetWriter, check_target
from preprocessing.convert.presets.base import Preset, PresetCase, PresetConfig
from preprocessing.dataset_json import DatasetSpec

RGB_CHANNELS = {0: "R", 1: "G", 2: "B"}


@dataclass(frozen=True)
class _Planned:
    case: str
    source: PresetCase
    split: str


def convert_with_preset(preset: Preset, config: PresetConfig) -> ConversionResult:
    """Convert every case the preset finds, or raise one DatasetError listing every problem."""
    check_target(config.output)
    problems = Problems()
    found = preset.discover(config.source, problems)
    planned, notes = _plan(found.cases, config, problems)
    with DatasetWriter(config.output, preset.file_ending) as writer:
        channels: tuple[int, PresetCase] | None = None
        for item in planned:
            loaded = preset.load(item.source, problems)
            if loaded is None or not check_image_content(loaded.image, item.source.image, problems):
                continue
            count = loaded.image.shape[0]
            channels = channels or (count, item.source)
            if count != channels[0]:
                problems.add(item.source.image, f"has {count} channel(s) but "
                             f"{channels[1].image.name} has {channels[0]}",
                             "re-extract it from the original download")
            elif not problems:  # after the first problem only check, so the report is complete
                writer.write_case(item.case, item.split, loaded.image, loaded.geometry, loaded.label)
        problems.raise_if_any(str(config.source))
        names = RGB_CHANNELS if channels and channels[0] == 3 else {0: preset.channel_name}
        spec = DatasetSpec(names, dict(preset.labels), len(writer.cases["Tr"]), preset.file_ending,
                           _description(preset, config))
        folder = writer.publish(spec)
        return ConversionResult(folder, tuple(writer.cases["Tr"]), tuple(writer.cases["Ts"]),
                                names, dict(preset.labels), preset.file_ending,
                                tuple(found.notes + notes + preset.load_notes()))


def _plan(cases: list[PresetCase], config: PresetConfig,
          problems: Problems) -> tuple[list[_Planned], list[str]]:
    """Ids, then labelled cases split Tr/Ts by group; unlabelled ones to Ts only when asked."""
    ids = unique_case_ids(case.stem for case in cases)
    labelled = {case: source for case, source in zip(ids, cases) if source.labels}
    unlabelled = [(case, source) for case, source in zip(ids, cases) if not source.labels]
    notes = []
    if cases and not labelled:
        problems.add(config.source, "no case has a label, so there is nothing to train on",
                     "check --source: it must hold the published masks too")
    groups = {case: source.group or f"case:{case}" for case, source in labelled.items()}
    test = split_test_groups(groups, config.output.test_fraction, config.output.seed)
    if unlabelled and not config.unlabelled_to_test:
        notes.append(f"{len(unlabelled)} case(s) without a label were skipped (e.g. "
                     f"{unlabelled[0][1].image.name}); --unlabelled-to-test puts them in imagesTs")
        unlabelled = []
    if unlabelled and test:
        problems.add(config.source, "unlabelled cases and a --test-fraction split would share "
                     "imagesTs, where every case then needs a label", "drop --test-fraction or "
                     "drop --unlabelled-to-test")
    planned = [_Planned(case, source, "Ts" if case in test else "Tr")
               for case, source in labelled.items()]
    planned += [_Planned(case, source, "Ts") for case, source in unlabelled]
    return planned, notes


def _description(preset: Preset, config: PresetConfig) -> str:
    return describe_options(f"preset {preset.key}", {
        "source": config.source, "unlabelled_to_test": config.unlabelled_to_test,
        "test_fraction": config.output.test_fraction or None,
        "seed": config.output.seed if config.output.test_fraction else None,
    })
