"""Evaluation stage: generation, scoring, the evaluation cache and the gate."""
