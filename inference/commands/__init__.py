"""Console commands owned by the inference package: evaluate."""
