"""CRDM, the causal representation and diffusion module at a split point: noise schedule,
exogenous encoder + neural SCM + proxy prior, conditional denoiser, and the split module joining them.
"""
