"""preprocessing: the raw dataset layer: nnU-Net v2 layout, image IO with geometry, integrity
checks, the demo federation and the converter (later: cropping, normalisation, resampling).
"""
