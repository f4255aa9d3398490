"""Running the federation's roles on NVIDIA FLARE: each client and the server in its own process.

The roles are ``training/runners.py``'s; this package carries their messages over FLARE's Collab API.
"""

LOOPBACK_ENGINE = "flare-loopback"  # mucald_train --engine's name for it, and the label of its run names
KITS_ENGINE = "flare"  # mucald_server: the server from its startup kit, each hospital from its own
