"""The training package's console command: ``mucald_train``."""
