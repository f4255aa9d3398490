"""inference: what happens after training. Owns prediction of new scans (``Predictor``, geometry-exact
export, ``mucald_predict``), evaluation (``mucald_evaluate``) and the end-to-end ``mucald_demo``.
"""
