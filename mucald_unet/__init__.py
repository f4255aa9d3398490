"""mucald_unet: split networks, CRDM and DACA modules, federation roles and the training loop
(built by the training issue; empty until then).
"""
