"""The human blastocyst dataset of Saeedi et al. 2017 (SFU): grayscale microscopy in
``Images/<name>.BMP`` and one binary (0/255) mask per component: ``GT_ZP/<name> ZP_Mask.bmp``,
``GT_TE/<name> TE_Mask.bmp``, ``GT_ICM/<name> ICM_Mask.bmp``.

The paper's task has five classes; the fifth, the blastocoel (the fluid cavity), is not shipped.
It is derived as the region enclosed by trophectoderm and inner cell mass that is none of the
three components. Where masks overlap, ICM wins over TE, and TE over ZP.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from scipy import ndimage

from preprocessing.convert.common import Problems
from preprocessing.convert.presets.base import (Discovery, LoadedCase, Preset, PresetCase,
                                                check_same_shape, geometry_2d, image_files,
                                                read_binary_mask, read_gray_2d, require_folder,
                                                stem)

COMPONENTS = ("ZP", "TE", "ICM")  # label order 1, 2, 3; blastocoel is 4
MASK_NAME = re.compile(r"^(?P<stem>.+?)[ _]?(?P<part>ZP|TE|ICM)_Mask$", re.IGNORECASE)


class Blastocyst(Preset):
    key = "blastocyst"
    default_name = "Blastocyst"
    labels = {"background": 0, "zona_pellucida": 1, "trophectoderm": 2, "inner_cell_mass": 3,
              "blastocoel": 4}

    def __init__(self, unlabelled_to_test: bool = False) -> None:
        super().__init__(unlabelled_to_test)
        self.without_cavity: list[str] = []

    def discover(self, source: Path, problems: Problems) -> Discovery:
        self.without_cavity = []
        images = {stem(p): p for p in image_files(require_folder(source, ("Images",), "blastocyst"))}
        masks: dict[str, dict[str, Path]] = {}
        for part in COMPONENTS:
            folder = require_folder(source, (f"GT_{part}",), "blastocyst")
            for path in image_files(folder):
                match = MASK_NAME.match(stem(path))
                if match is None or match["part"].upper() != part:
                    problems.add(path, f"is not named '<image name> {part}_Mask.bmp'",
                                 f"keep only the published masks in GT_{part}/")
                    continue
                masks.setdefault(match["stem"], {})[part] = path
        for key in sorted(set(masks) - set(images)):
            for path in masks[key].values():
                problems.add(path, f"is a mask without an image Images/{key}.BMP",
                             "restore the image, or delete the mask")
        cases = []
        for key, image in sorted(images.items()):
            found = masks.get(key, {})
            missing = [p for p in COMPONENTS if p not in found]
            if missing:
                problems.add(image, "has no " + ", ".join(f"GT_{p}/{key} {p}_Mask.bmp" for p in missing),
                             "restore the masks from the download (all three are published)")
                continue
            cases.append(PresetCase(key, image, tuple(found[p] for p in COMPONENTS)))
        return Discovery(cases, [])

    def load(self, case: PresetCase, problems: Problems) -> LoadedCase | None:
        image = read_gray_2d(case.image, problems)
        parts = [read_binary_mask(path, problems) for path in case.labels]
        if image is None or any(part is None for part in parts):
            return None
        if not all(check_same_shape(image, part, case.image, path, problems)
                   for part, path in zip(parts, case.labels)):
            return None
        label = compose_label(*(part.astype(bool) for part in parts))
        if not (label == 4).any():
            self.without_cavity.append(case.stem)
        return LoadedCase(image, geometry_2d(image.shape[1:], None), label)

    def load_notes(self) -> list[str]:
        if not self.without_cavity:
            return []
        return [f"{len(self.without_cavity)} image(s) have no blastocoel (TE and ICM enclose no "
                f"cavity, e.g. {self.without_cavity[0]})"]


def compose_label(zp: np.ndarray, te: np.ndarray, icm: np.ndarray) -> np.ndarray:
    """One label map from the three component masks, the cavity derived (see module doc)."""
    cells = te | icm
    cavity = ndimage.binary_fill_holes(cells) & ~cells & ~zp
    label = np.zeros(zp.shape, np.uint8)
    label[zp] = 1
    label[te] = 2
    label[icm] = 3
    label[cavity] = 4
    return label
