"""AutoGraph leaves tf_keras (as it leaves keras), TF-Transform and trainer alone once trainer.models is
imported; TFRS, which needs conversion, is still converted."""
import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)


def test_graph_ready_packages_are_not_converted_but_tfrs_is():
    import tensorflow_recommenders as tfrs
    import tensorflow_transform as tft
    import tf_keras
    from tensorflow.python.autograph.impl import conversion

    import trainer.models  # noqa: F401  (installs the rules)
    from trainer.models.retrieval import QueryTower

    assert conversion.is_allowlisted(tf_keras.layers.Dense.call)
    assert conversion.is_allowlisted(tf_keras.Model.fit)
    assert conversion.is_allowlisted(QueryTower.call)
    assert conversion.is_allowlisted(tft.TFTransformOutput.transform_raw_features)
    assert not conversion.is_allowlisted(tfrs.tasks.Retrieval.call)


def test_install_is_idempotent():
    from tensorflow.python.autograph.core import config

    from trainer import autograph_rules

    autograph_rules.install()
    before = len(config.CONVERSION_RULES)
    autograph_rules.install()
    assert len(config.CONVERSION_RULES) == before
