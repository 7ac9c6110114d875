"""TFRS models: small towers and tasks composed per stage."""
