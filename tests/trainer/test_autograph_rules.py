"""AutoGraph leaves tf_keras alone (as it leaves keras) once trainer.models is imported; our code is converted."""
import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)


def test_tf_keras_is_not_converted_but_model_code_is():
    import tf_keras
    from tensorflow.python.autograph.impl import conversion

    import trainer.models  # noqa: F401  (installs the rule)
    from trainer.models.retrieval import QueryTower

    assert conversion.is_allowlisted(tf_keras.layers.Dense.call)
    assert conversion.is_allowlisted(tf_keras.Model.fit)
    assert not conversion.is_allowlisted(QueryTower.call)
