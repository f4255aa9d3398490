"""planners: dataset fingerprints, label-derived proxies, per-task causal graphs and the plans file
that every later stage reads (built by the self-configuration issue; empty until then).
"""
