"""TFRS models: small towers and tasks composed per stage."""
from trainer import autograph_rules

autograph_rules.install()  # before any model here is traced: AutoGraph skips tf_keras as it skips keras
