"""MosMedData COVID19_1110 as published (Morozov et al. 2020): CT volumes in
``studies/CT-0 .. CT-4/study_XXXX.nii.gz`` and, for 50 CT-1 studies, lesion masks (ground glass
and consolidation, one class) in ``masks/study_XXXX_mask.nii.gz``.

Only studies with a mask are labelled; the others are skipped, or go to imagesTs with
``--unlabelled-to-test``. Volumes keep their values, dtype and geometry; a mask must lie on its
study's grid.
"""

from __future__ import annotations

from pathlib import Path

from preprocessing.convert.common import Problems, read_or_record
from preprocessing.convert.presets.base import (Discovery, LoadedCase, Preset, PresetCase, child,
                                                require_folder, snap_binary)

NIFTI = (".nii.gz", ".nii")
MASK_SUFFIX = "_mask"


def _volume_stem(path: Path) -> str | None:
    name = path.name
    ending = next((e for e in NIFTI if name.lower().endswith(e)), None)
    return None if ending is None or name.startswith(".") else name[: -len(ending)]


def _volumes(folder: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(folder.rglob("*")):
        key = _volume_stem(path)
        if key is not None and path.is_file():
            found.setdefault(key, path)
    return found


class MosMed(Preset):
    key = "mosmed"
    default_name = "MosMedCOVID"
    labels = {"background": 0, "lesion": 1}
    channel_name = "CT"
    file_ending = ".nii.gz"

    def discover(self, source: Path, problems: Problems) -> Discovery:
        nested = child(source, "COVID19_1110")
        root = nested if nested is not None and child(source, "studies") is None else source
        studies = _volumes(require_folder(root, ("studies",), "MosMedData COVID19_1110"))
        masks = {key[: -len(MASK_SUFFIX)]: path
                 for key, path in _volumes(require_folder(root, ("masks",), "MosMedData")).items()
                 if key.endswith(MASK_SUFFIX)}
        for key in sorted(set(masks) - set(studies)):
            problems.add(masks[key], f"is a mask without its study {key}.nii.gz under studies/",
                         "unpack every CT-* folder of the download, or delete the mask")
        cases = [PresetCase(key, path, (masks[key],) if key in masks else ())
                 for key, path in sorted(studies.items())]
        return Discovery(cases, [])

    def load(self, case: PresetCase, problems: Problems) -> LoadedCase | None:
        image = read_or_record(case.image, problems)
        if image is not None and image[0].shape[0] != 1:
            problems.add(case.image, f"has {image[0].shape[0]} channels, not one CT volume",
                         "re-extract it from the download")
            image = None
        if not case.labels:
            return None if image is None else LoadedCase(image[0], image[1], None)
        mask = read_or_record(case.labels[0], problems)
        label = None if mask is None else snap_binary(mask[0][0], case.labels[0], problems)
        if image is None or mask is None or label is None:
            return None
        differences = mask[1].mismatches(image[1])
        if differences:
            problems.add(case.labels[0], f"geometry differs from its study {case.image}: "
                         f"{'; '.join(differences)}", "re-extract both from the download, or "
                         "convert with mucald_convert volumes --resample-labels")
            return None
        return LoadedCase(image[0], image[1], label)
