"""Offline checks of the k8s/ manifests (kustomize, schema validation, lint, policy)."""
