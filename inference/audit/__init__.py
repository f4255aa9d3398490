"""The privacy audit: what an honest-but-curious server can learn from what crosses split 1.

Attacks (inverse network, white-box inversion, membership inference), dependence (distance
correlation), their metrics with bootstrap intervals, and the report behind ``mucald_audit``.
"""
