"""mucald_unet: the split networks, CRDM and DACA modules, the client/server roles and transport,
and the training loop behind ``mucald_train``.
"""
