"""Baseline split-learning defences on the same code path as mucald: Gaussian noise on what
crosses split 1, and NoPeek (a distance-correlation penalty between images and those features).
"""
