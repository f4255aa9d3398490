"""inference: what happens after training. Owns evaluation of predicted label maps against
references (metrics, summaries, ``mucald_evaluate``); prediction and geometry-exact export are still to come.
"""
