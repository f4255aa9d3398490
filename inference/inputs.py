"""What to predict: raw-layout channel files (``CASE_0000<ending>``, ...) grouped into cases.

Input is a folder (every channel file in it) or explicit files; both are grouped the same way.
Problems that concern one case (a gap in its channels, mixed formats) are kept with that case
so the others can still be predicted; problems with the request itself raise at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from inference.errors import PredictionError
from preprocessing.dataset import CaseImages, parse_channel_file, read_case_channels
from preprocessing.errors import ImageIOError
from preprocessing.io import ending_of

LOSSY_ENDINGS = {".jpg": ".png", ".jpeg": ".png"}  # a label map must not be JPEG-compressed


@dataclass(frozen=True)
class InputCase:
    case_id: str
    files: dict[int, Path]  # channel index -> file
    problems: tuple[str, ...] = field(default=())

    @property
    def ending(self) -> str:
        return ending_of(next(iter(self.files.values()))) or ""

    @property
    def output_ending(self) -> str:
        """The input's format, except that JPEG input gets PNG labels (lossless)."""
        return LOSSY_ENDINGS.get(self.ending, self.ending)

    def read(self, num_channels: int) -> CaseImages:
        """The case's images; the channel files must be exactly the task's (a file may be RGB)."""
        if self.problems:
            raise PredictionError(f"{self.case_id}: {'; '.join(self.problems)}")
        ending = self.ending
        folder = next(iter(self.files.values())).parent
        images = read_case_channels(lambda c: self.files.get(c, folder / f"{self.case_id}_{c:04d}{ending}"),
                                    num_channels)
        extra = sorted(set(self.files) - set(range(len(images.files))))
        if extra:
            names = ", ".join(self.files[c].name for c in extra)
            raise ImageIOError(self.files[extra[0]], f"is one channel file too many: the task takes "
                               f"{num_channels} channel(s), read from {len(images.files)} file(s); extra: {names}",
                               "remove the extra files or predict with the task they belong to")
        return images


def discover_cases(inputs: Sequence[Path]) -> list[InputCase]:
    """Group the channel files of a folder, or of explicit files, into cases (sorted by id)."""
    if not inputs:
        raise PredictionError("no input given. Fix: pass -i FOLDER or -i FILE_0000.nii.gz ...")
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(f for f in item.iterdir() if f.is_file() and _channel_name(f) is not None)
        elif item.is_file():
            if _channel_name(item) is None:
                raise PredictionError(f"{item}: not a channel file named CASE_0000<ending> with a supported "
                                      "ending. Fix: rename it like nnU-Net's imagesTs (e.g. case1_0000.nii.gz).")
            files.append(item)
        else:
            raise PredictionError(f"{item}: no such file or folder. Fix: check the -i path.")
    if not files:
        raise PredictionError(f"{', '.join(map(str, inputs))}: no channel files (CASE_0000<ending>). Fix: "
                              "point -i at a folder laid out like imagesTs.")
    grouped: dict[str, dict[int, list[Path]]] = {}
    for path in files:
        case_id, channel = _channel_name(path)
        grouped.setdefault(case_id, {}).setdefault(channel, []).append(path)
    return [_case(case_id, channels) for case_id, channels in sorted(grouped.items())]


def check_output_folder(out_folder: Path, inputs: Sequence[Path]) -> None:
    """Refuse to write predictions into a folder that holds the images being predicted."""
    target = Path(out_folder).resolve()
    for item in map(Path, inputs):
        folder = item.resolve() if item.is_dir() else item.resolve().parent
        if folder == target:
            raise PredictionError(f"{out_folder}: the output folder is the input folder. Fix: pass another -o, "
                                  "so that predictions cannot be mistaken for (or overwrite) images.")


def _channel_name(path: Path) -> tuple[str, int] | None:
    ending = ending_of(path)
    return parse_channel_file(path.name, ending) if ending else None


def _case(case_id: str, channels: dict[int, list[Path]]) -> InputCase:
    problems = []
    duplicated = [paths for paths in channels.values() if len(paths) > 1]
    if duplicated:
        problems.append(f"channel file given in several formats ({', '.join(p.name for p in duplicated[0])}); "
                        "Fix: keep one")
    endings = {ending_of(paths[0]) for paths in channels.values()}
    if len(endings) > 1:
        problems.append(f"channel files mix formats ({', '.join(sorted(endings))}); Fix: convert to one")
    return InputCase(case_id, {c: paths[0] for c, paths in sorted(channels.items())}, tuple(problems))
