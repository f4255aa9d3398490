"""HAM10000 as published (Tschandl et al. 2018, Harvard Dataverse): dermoscopy JPEGs in
``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/`` (or one ``HAM10000_images/``), the
lesion masks of Tschandl et al. 2020 in ``HAM10000_segmentations_lesion_tschandl/
ISIC_XXXXXXX_segmentation.png`` (0/255), and ``HAM10000_metadata.csv`` (lesion_id, image_id, ...).

Several images show the same lesion; with the metadata the split keeps each lesion on one side,
so a test image is never a near copy of a training image.
"""

from __future__ import annotations

from pathlib import Path

from preprocessing.convert.common import Problems
from preprocessing.convert.presets.base import (Discovery, LoadedCase, Preset, PresetCase, child,
                                                image_files, load_image_with_binary_mask,
                                                pair_by_stem, read_csv_rows, require_folder, stem)

IMAGE_FOLDERS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images")
MASK_FOLDER = "HAM10000_segmentations_lesion_tschandl"
MASK_SUFFIX = "_segmentation"
METADATA = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata")


class HAM10000(Preset):
    key = "ham10000"
    default_name = "HAM10000"
    labels = {"background": 0, "lesion": 1}

    def discover(self, source: Path, problems: Problems) -> Discovery:
        notes: list[str] = []
        folders = [f for f in (child(source, n) for n in IMAGE_FOLDERS) if f is not None and f.is_dir()]
        if not folders:
            require_folder(source, IMAGE_FOLDERS, "HAM10000 image")
        images = self._unique_images(folders, notes)
        mask_folder = require_folder(source, (MASK_FOLDER,), "HAM10000 lesion segmentation")
        masks = {stem(p)[: -len(MASK_SUFFIX)]: p for p in image_files(mask_folder, recursive=True)
                 if stem(p).endswith(MASK_SUFFIX)}
        pairs = pair_by_stem(images, masks, problems,
                             f"restore {MASK_FOLDER}/<image id>{MASK_SUFFIX}.png")
        lesions = self._lesions(source, problems, notes)
        cases = [PresetCase(stem(image), image, (mask,), group=lesions.get(stem(image)))
                 for image, mask in pairs]
        if lesions:
            loose = sum(case.group is None for case in cases)
            if loose:
                notes.append(f"{loose} image(s) are not in the metadata and split on their own")
        return Discovery(cases, notes)

    def load(self, case: PresetCase, problems: Problems) -> LoadedCase | None:
        return load_image_with_binary_mask(case, problems)

    @staticmethod
    def _unique_images(folders: list[Path], notes: list[str]) -> list[Path]:
        """One file per image id: the Kaggle mirror ships each part twice (upper- and
        lower-case folder names), which is the same image, not a second case."""
        chosen: dict[str, Path] = {}
        repeated = 0
        for folder in folders:
            for path in image_files(folder, recursive=True):
                if stem(path) in chosen:
                    repeated += 1
                else:
                    chosen[stem(path)] = path
        if repeated:
            notes.append(f"{repeated} image(s) appear in more than one image folder; the first "
                         "copy of each was used")
        return sorted(chosen.values(), key=lambda p: stem(p))

    @staticmethod
    def _lesions(source: Path, problems: Problems, notes: list[str]) -> dict[str, str]:
        """image_id -> lesion_id from the metadata, or {} (then the split is per image)."""
        path = child(source, *METADATA)
        if path is None or not path.is_file():
            notes.append("no HAM10000_metadata.csv: the split is per image, so images of one "
                         "lesion may land in both imagesTr and imagesTs")
            return {}
        rows = read_csv_rows(path, ("lesion_id", "image_id"), problems)
        return {row["image_id"]: row["lesion_id"] for row in rows if row["image_id"]}
