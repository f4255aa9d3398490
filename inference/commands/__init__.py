"""Console commands owned by the inference package: predict, evaluate, demo, audit.

Commands run offline: importing this package sets HF_HUB_OFFLINE (unless already set) before
any command module imports diffusers, which reads it once.
"""

from preprocessing.cli_support import go_offline

go_offline()
