"""Kvasir-SEG as published (Jha et al. 2020): ``Kvasir-SEG/images/<id>.jpg`` with the mask of
the same name in ``Kvasir-SEG/masks/<id>.jpg``. Masks are JPEG, so 0/255 arrives with
compression noise; it snaps to 0/1. ``kavsir_bboxes.json`` (bounding boxes) is not needed.
"""

from __future__ import annotations

from pathlib import Path

from preprocessing.convert.common import Problems
from preprocessing.convert.presets.base import (Discovery, LoadedCase, Preset, PresetCase, child,
                                                image_files, load_image_with_binary_mask,
                                                pair_by_stem, require_folder, stem)


class KvasirSEG(Preset):
    key = "kvasir-seg"
    default_name = "KvasirSEG"
    labels = {"background": 0, "polyp": 1}

    def discover(self, source: Path, problems: Problems) -> Discovery:
        nested = child(source, "Kvasir-SEG")
        root = nested if nested is not None and child(source, "images") is None else source
        images = image_files(require_folder(root, ("images",), "Kvasir-SEG"))
        masks = {stem(p): p for p in image_files(require_folder(root, ("masks",), "Kvasir-SEG"))}
        pairs = pair_by_stem(images, masks, problems, "restore its mask in masks/ (same file name)")
        return Discovery([PresetCase(stem(image), image, (mask,)) for image, mask in pairs])

    def load(self, case: PresetCase, problems: Problems) -> LoadedCase | None:
        return load_image_with_binary_mask(case, problems)
