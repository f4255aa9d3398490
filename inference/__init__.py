"""inference: prediction on new scans, export with the original geometry, and evaluation
(built by the prediction issue; empty until then).
"""
