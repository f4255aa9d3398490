"""Console commands owned by the preprocessing package: make_demo, verify, convert."""
