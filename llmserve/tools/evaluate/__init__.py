"""scripts/evaluate: a dataset's questions asked to a target, each answer scored against its reference."""
