"""planners: dataset fingerprints, label-derived proxies, per-task causal graphs and the one
plans file per federation that every later stage reads; owns `mucald_plan_and_preprocess`.
"""
