"""Convert data as public datasets ship it into the nnU-Net v2 raw layout (``mucald_convert``).

``convert_pairs_2d`` takes 2D image/mask pairs (Kvasir-SEG, ISIC, ...), ``convert_volume_pairs``
takes image/label volumes (NRRD, NIfTI, MetaImage). Both report every input problem at once and
publish a dataset folder only after it passed ``verify_dataset``.
"""

from preprocessing.convert.common import ConversionResult, parse_name_list
from preprocessing.convert.label_map import LabelMap
from preprocessing.convert.output import OutputConfig
from preprocessing.convert.pairs2d import Pairs2DConfig, convert_pairs_2d
from preprocessing.convert.volumes import VolumePairsConfig, convert_volume_pairs

__all__ = ["ConversionResult", "LabelMap", "OutputConfig", "Pairs2DConfig", "VolumePairsConfig",
           "convert_pairs_2d", "convert_volume_pairs", "parse_name_list"]
