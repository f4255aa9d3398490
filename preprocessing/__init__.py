"""preprocessing: raw data in and training arrays out: nnU-Net v2 layout, image IO with geometry,
integrity check, demo federation, converter, crop/normalise/resample with an exact inverse.
"""
