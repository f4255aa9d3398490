"""``mucald_convert``: turn public-dataset layouts into the nnU-Net v2 raw layout.

``images`` converts 2D image/mask pairs (Kvasir-SEG, ISIC, ...); ``volumes`` converts image/label
volume pairs (NRRD, NIfTI, MetaImage); ``preset`` reads one of the paper's public datasets in the
layout it is published with. The work lives in ``preprocessing.convert``.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from preprocessing.cli_support import entry_points
from preprocessing.convert import (ConversionResult, LabelMap, OutputConfig, Pairs2DConfig,
                                   VolumePairsConfig, convert_pairs_2d, convert_volume_pairs,
                                   parse_name_list)
from preprocessing.convert.presets import PRESETS, PresetConfig, convert_preset, default_name
from preprocessing.paths import RAW_ENV, resolve_root

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Convert public dataset layouts into the nnU-Net v2 raw layout "
                       "(DatasetXXX_Name with imagesTr/labelsTr/dataset.json).")

OutOpt = Annotated[Path | None, typer.Option(
    "--out", help=f"Raw root folder to create the dataset in (default: ${RAW_ENV}).")]
IdOpt = Annotated[int, typer.Option("--dataset-id", help="Dataset id 0..999 (DatasetXXX_Name).")]
NameOpt = Annotated[str, typer.Option("--name", help="Dataset name: letters, digits, '_' or '-'.")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace an existing non-empty dataset folder (only once the new one verified).")]
LabelsOpt = Annotated[str | None, typer.Option(
    "--labels", help="Label names in index order, e.g. \"background,polyp\" "
                     "(default: background,foreground).")]
LabelMapOpt = Annotated[str | None, typer.Option(
    "--label-map", help="Raw value -> label index, e.g. \"0:0,255:1\"; values snap to the nearest "
                        "listed raw value (JPEG artefacts).")]
FractionOpt = Annotated[float, typer.Option(
    "--test-fraction", help="Fraction of labelled cases put in imagesTs/labelsTs (0 <= F < 1).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the deterministic Tr/Ts split.")]


@app.command()
def images(
    images_dir: Annotated[Path, typer.Option("--images", help="Folder of images (.jpg, .png, ...).")],
    masks_dir: Annotated[Path, typer.Option("--masks", help="Folder of masks (may equal --images "
                                                            "when --mask-suffix tells them apart).")],
    dataset_id: IdOpt,
    name: NameOpt,
    out: OutOpt = None,
    mask_suffix: Annotated[str, typer.Option(
        "--mask-suffix", help="Mask name = image stem + suffix, e.g. \"_segmentation\" for ISIC.")] = "",
    image_glob: Annotated[str, typer.Option(
        "--image-glob", help="Only images whose file name matches, e.g. \"*.jpg\".")] = "*",
    labels: LabelsOpt = None,
    label_map: LabelMapOpt = None,
    channel_name: Annotated[str, typer.Option(
        "--channel-name", help="Channel name for grayscale images (RGB gets R, G, B).")] = "gray",
    allow_unlabelled: Annotated[bool, typer.Option(
        "--allow-unlabelled",
        help="Put images without a mask into imagesTs instead of failing.")] = False,
    test_fraction: FractionOpt = 0.0,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """2D image/mask pairs (Kvasir-SEG, ISIC/HAM10000, ...) -> lossless PNG dataset."""
    config = Pairs2DConfig(
        images_dir=images_dir, masks_dir=masks_dir,
        output=_output(out, dataset_id, name, overwrite, test_fraction, seed),
        mask_suffix=mask_suffix, image_glob=image_glob, label_names=parse_name_list(labels),
        label_map=LabelMap.parse(label_map) if label_map is not None else None,
        channel_name=channel_name, allow_unlabelled=allow_unlabelled)
    _print_summary(convert_pairs_2d(config))


@app.command()
def volumes(
    input_dir: Annotated[Path, typer.Option("--input", help="Folder holding the image and label files.")],
    channel_name: Annotated[str, typer.Option(
        "--channel-name", help="Modality name, e.g. CT or T1; the planner picks the intensity "
                               "normalisation from it (CT -> CT normalisation).")],
    dataset_id: IdOpt,
    name: NameOpt,
    out: OutOpt = None,
    image_pattern: Annotated[str, typer.Option(
        "--image-pattern",
        help="Image file name with {case}, relative to --input.")] = "{case}_image.nrrd",
    label_pattern: Annotated[str, typer.Option(
        "--label-pattern",
        help="Label file name with {case}, relative to --input.")] = "{case}_label.nrrd",
    include: Annotated[list[str] | None, typer.Option(
        "--include", help="Only cases whose id matches this glob, e.g. \"lung*\" (repeatable).")] = None,
    labels: LabelsOpt = None,
    label_map: LabelMapOpt = None,
    file_ending: Annotated[str, typer.Option(
        "--file-ending", help="Output format: .nii.gz, .nii, .nrrd or .mha.")] = ".nii.gz",
    resample_labels: Annotated[bool, typer.Option(
        "--resample-labels", help="Resample labels whose grid differs onto the image grid "
                                  "(nearest neighbour) instead of failing.")] = False,
    test_fraction: FractionOpt = 0.0,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Image/label volume pairs (NRRD, NIfTI, MHA) -> dataset with the images' geometry kept."""
    config = VolumePairsConfig(
        input_dir=input_dir, channel_name=channel_name,
        output=_output(out, dataset_id, name, overwrite, test_fraction, seed),
        image_pattern=image_pattern, label_pattern=label_pattern, include=tuple(include or ()),
        label_names=parse_name_list(labels),
        label_map=LabelMap.parse(label_map) if label_map is not None else None,
        file_ending=file_ending, resample_labels=resample_labels)
    _print_summary(convert_volume_pairs(config))


PresetName = Enum("PresetName", {key.replace("-", "_"): key for key in PRESETS}, type=str)


@app.command()
def preset(
    dataset: Annotated[PresetName, typer.Argument(
        help="Which published dataset: " + ", ".join(PRESETS) + " (layouts: docs/reproduce_paper.md).",
        show_default=False)],
    source: Annotated[Path, typer.Option("--source", help="Folder holding the unpacked download.")],
    dataset_id: IdOpt,
    name: Annotated[str | None, typer.Option(
        "--name", help="Dataset name (default: the preset's, e.g. KvasirSEG).")] = None,
    out: OutOpt = None,
    test_fraction: FractionOpt = 0.0,
    seed: SeedOpt = 0,
    unlabelled_to_test: Annotated[bool, typer.Option(
        "--unlabelled-to-test", help="Put published cases without a label (MosMed studies without "
                                     "a mask, HC18's test_set) in imagesTs instead of skipping them.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """A public dataset in its published layout (Kvasir-SEG, HAM10000, HC18, MosMed, blastocyst)."""
    key = dataset.value
    output = _output(out, dataset_id, name or default_name(key), overwrite, test_fraction, seed)
    _print_summary(convert_preset(key, PresetConfig(source, output, unlabelled_to_test)))


def _output(out: Path | None, dataset_id: int, name: str, overwrite: bool, test_fraction: float,
            seed: int) -> OutputConfig:
    return OutputConfig(raw_root=resolve_root(out, RAW_ENV, "--out"), dataset_id=dataset_id,
                        name=name, overwrite=overwrite, test_fraction=test_fraction, seed=seed)


def _print_summary(result: ConversionResult) -> None:
    console = Console(highlight=False, soft_wrap=True)
    labels = ", ".join(f"{value}={name}" for name, value in result.labels.items())
    channels = ", ".join(result.channel_names[i] for i in sorted(result.channel_names))
    console.print(f"[bold green]wrote[/] {escape(str(result.dataset_folder))}")
    console.print(f"  cases: {len(result.train_cases)} training (imagesTr), "
                  f"{len(result.test_cases)} test (imagesTs); files {result.file_ending}")
    console.print(f"  channels: {escape(channels)}; labels: {escape(labels)}")
    for note in result.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")


main, entry = entry_points(app)

if __name__ == "__main__":
    entry()
