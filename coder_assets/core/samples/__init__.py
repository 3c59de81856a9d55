"""Samples stage: instruction pairs and FIM samples from one snapshot's files."""
