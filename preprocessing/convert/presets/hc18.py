"""HC18 as published on Zenodo (van den Heuvel et al. 2018): ``training_set/NNN_HC.png`` with
``NNN_HC_Annotation.png`` (some ``NNN_2HC``), ``training_set_pixel_size_and_HC.csv`` (filename,
pixel size(mm), head circumference (mm)), and the unannotated ``test_set/`` with
``test_set_pixel_size.csv``.

The annotation is the head's ellipse drawn as a 1-2 px outline, so it is filled into a head mask
(a fitted ellipse where the outline is open). The pixel size becomes the spacing of 2D NIfTI
files, so Dice is unaffected but HD95/ASSD come out in mm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from preprocessing.convert.common import Problems
from preprocessing.convert.presets.base import (Discovery, LoadedCase, Preset, PresetCase,
                                                check_same_shape, child, geometry_2d, image_files,
                                                read_csv_rows, read_gray_2d, require_folder, stem)
from preprocessing.convert.presets.ellipse import EllipseFitError, head_mask

ANNOTATION_SUFFIX = "_annotation"  # lower case: matched case-insensitively
# The side tables of the Zenodo record, and the column that holds the pixel size in mm.
TRAIN_CSV, TEST_CSV = "training_set_pixel_size_and_HC.csv", "test_set_pixel_size.csv"
PIXEL_COLUMN = "pixel size(mm)"


class HC18(Preset):
    key = "hc18"
    default_name = "HC18"
    labels = {"background": 0, "head": 1}
    channel_name = "US"
    file_ending = ".nii.gz"  # PNG holds no spacing

    def __init__(self, unlabelled_to_test: bool = False) -> None:
        super().__init__(unlabelled_to_test)
        self.fitted: list[str] = []

    def discover(self, source: Path, problems: Problems) -> Discovery:
        self.fitted = []
        training = require_folder(source, ("training_set",), "HC18 (Zenodo)")
        cases = self._training_cases(source, training, problems)
        notes = []
        test = child(source, "test_set")
        if test is not None and test.is_dir() and self.unlabelled_to_test:
            spacing = self._pixel_sizes(source, TEST_CSV, problems)
            cases += [PresetCase(f"test_{stem(p)}", p, (), self._spacing(p, spacing, problems))
                      for p in image_files(test)]
        elif test is not None and test.is_dir():
            notes.append(f"test_set/ ({len(image_files(test))} images without annotations) was not "
                         "converted; --unlabelled-to-test puts it in imagesTs")
        return Discovery(cases, notes)

    def load(self, case: PresetCase, problems: Problems) -> LoadedCase | None:
        image = read_gray_2d(case.image, problems)
        geometry = None if image is None else geometry_2d(image.shape[1:], case.spacing)
        if not case.labels:
            return None if geometry is None else LoadedCase(image, geometry, None)
        annotation = read_gray_2d(case.labels[0], problems)
        if image is None or annotation is None or geometry is None:
            return None
        if not check_same_shape(image, annotation[0], case.image, case.labels[0], problems):
            return None
        outline = annotation[0] > annotation.max() / 2
        try:
            mask, fitted = head_mask(outline)
        except EllipseFitError as err:
            problems.add(case.labels[0], f"{err}, so no head mask can be made from it",
                         "re-extract the annotation from the Zenodo download")
            return None
        if fitted:
            self.fitted.append(case.stem)
        return LoadedCase(image, geometry, mask.astype(np.uint8))

    def _training_cases(self, source: Path, folder: Path, problems: Problems) -> list[PresetCase]:
        files = image_files(folder)
        annotations = {stem(p)[: -len(ANNOTATION_SUFFIX)]: p for p in files
                       if stem(p).lower().endswith(ANNOTATION_SUFFIX)}
        images = [p for p in files if not stem(p).lower().endswith(ANNOTATION_SUFFIX)]
        spacing = self._pixel_sizes(source, TRAIN_CSV, problems)
        cases = []
        for image in images:
            if stem(image) not in annotations:
                problems.add(image, f"has no {stem(image)}_Annotation.png",
                             "re-extract training_set/ from the Zenodo download")
                continue
            cases.append(PresetCase(stem(image), image, (annotations[stem(image)],),
                                    self._spacing(image, spacing, problems)))
        for key in sorted(set(annotations) - {stem(p) for p in images}):
            problems.add(annotations[key], "is an annotation without an image",
                         f"restore {key}.png in training_set/, or delete the annotation")
        return cases

    @staticmethod
    def _pixel_sizes(source: Path, name: str, problems: Problems) -> dict[str, float] | None:
        """filename -> pixel size (mm), or None (recorded) when the table is missing."""
        path = child(source, name)
        if path is None or not path.is_file():
            problems.add(source / name, "is missing, so the pixel spacing is unknown",
                         "put the CSV from the Zenodo record next to the image folders")
            return None
        sizes = {}
        for row in read_csv_rows(path, ("filename", PIXEL_COLUMN), problems):
            try:
                sizes[row["filename"]] = float(row[PIXEL_COLUMN])
            except ValueError:
                problems.add(path, f"row {row['filename']!r} has pixel size {row[PIXEL_COLUMN]!r}",
                             "use the file as published, unedited")
        return sizes

    @staticmethod
    def _spacing(image: Path, sizes: dict[str, float] | None,
                 problems: Problems) -> tuple[float, float] | None:
        if sizes is None:
            return None
        size = sizes.get(image.name)
        if size is None or not size > 0:
            problems.add(image, "has no positive pixel size in the CSV",
                         "use the CSV published with this image folder")
            return None
        return (size, size)

    def load_notes(self) -> list[str]:
        if not self.fitted:
            return []
        return [f"{len(self.fitted)} annotation outline(s) were open (e.g. {self.fitted[0]}); "
                "their head masks are the least-squares ellipse through the outline"]
