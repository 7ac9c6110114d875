"""A real tfrs ScaNN index exported as a SavedModel loads and answers over gRPC (ScaNN ops registered)."""
import numpy as np
import tensorflow as tf

from serving.client import ServingClient
from serving.testing import start_server


def test_scann_model_serves(tmp_path):
    import tensorflow_recommenders as tfrs

    rng = np.random.default_rng(0)
    items = tf.constant([f"item{i}".encode() for i in range(64)])
    embeddings = tf.constant(rng.normal(size=(64, 4)).astype("float32"))

    class Retrieval(tf.Module):
        def __init__(self):
            super().__init__()
            self.index = tfrs.layers.factorized_top_k.ScaNN(k=5, num_leaves=4, num_leaves_to_search=2,
                                                            num_reordering_candidates=16)
            self.index.index(embeddings, items)
            self.users = tf.Variable(rng.normal(size=(10, 4)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
        def serve(self, user_id):
            scores, ids = self.index(tf.gather(self.users, tf.strings.to_hash_bucket_fast(user_id, 10)))
            return {"item_ids": ids, "scores": scores}

    model = Retrieval()
    expected = model.serve(tf.constant(["u1"]))  # call once before saving (ScaNN trap)
    tf.saved_model.save(model, str(tmp_path / "retrieval" / "1"), signatures={"serving_default": model.serve},
                        options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]))
    with start_server(model_base_path=str(tmp_path / "retrieval"), model_name="retrieval", rest=False) as srv:
        client = ServingClient(srv.grpc_address)
        assert client.status("retrieval")[0]["state"] == "AVAILABLE"
        out = client.predict("retrieval", {"user_id": np.array(["u1"])})
        np.testing.assert_array_equal(out["item_ids"], expected["item_ids"].numpy())
        np.testing.assert_allclose(out["scores"], expected["scores"].numpy(), rtol=1e-5)
