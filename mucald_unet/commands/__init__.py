"""The training package's console commands: ``mucald_train``, and for a federation on separate machines
``mucald_provision``, ``mucald_server`` and ``mucald_client``.

Commands run offline: importing this package sets HF_HUB_OFFLINE (unless already set) before
any command module imports diffusers, which reads it once.
"""

from preprocessing.cli_support import go_offline

go_offline()
