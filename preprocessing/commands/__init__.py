"""Console commands owned by the preprocessing package: make_demo, verify, convert.

Commands run offline: importing this package sets HF_HUB_OFFLINE (unless already set) before
any command module imports diffusers, which reads it once.
"""

from preprocessing.cli_support import go_offline

go_offline()
