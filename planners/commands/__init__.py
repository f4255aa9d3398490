"""Console commands owned by the planners package: plan_and_preprocess."""
