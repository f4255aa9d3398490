"""Running the federation's roles on NVIDIA FLARE: each client and the server in its own process.

The roles are ``training/runners.py``'s; this package carries their messages over FLARE's Collab API.
"""

LOOPBACK_ENGINE = "flare-loopback"  # mucald_train --engine's name for it, and the label of its run names
KITS_ENGINE = "flare"  # mucald_server: the server from its startup kit, each hospital from its own
# installed at every site (the same version); FLARE must not copy their files into a job, where a
# partial copy without the packages' __init__ files would shadow the installed packages
INSTALLED_PACKAGES = ["mucald_unet", "planners", "preprocessing", "inference"]
