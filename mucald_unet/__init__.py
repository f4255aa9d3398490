"""mucald_unet: the split networks, CRDM and DACA modules, the client/server roles and transport,
the training loop behind ``mucald_train``, and the roles as NVIDIA FLARE sites (``deployment/``).
"""
