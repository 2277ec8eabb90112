"""Inference-time scaling: verifiers that score images against a prompt, and samplers that spend a budget of model evaluations searching for the best-scored image (docs/algorithms.md)."""
