"""Kubeflow pipeline: compile, gate, (optionally) a local run."""
