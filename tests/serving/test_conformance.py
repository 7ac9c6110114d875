"""serving.conformance: TF Serving's own server-test expectations (tensorflow_model_server_test.py) against
our server, on look-alikes of TF Serving's testdata models. One model is made wrong on purpose, so the
run also proves that the checks fail when the answers are wrong."""
import os

from serving import conformance, testing


def test_tf_serving_expectations_pass_and_a_wrong_model_fails_exactly_its_checks(tmp_path):
    testdata, work = str(tmp_path / "testdata"), str(tmp_path / "work")
    os.makedirs(work)
    conformance.generate(testdata)
    wrong = os.path.join(testdata, "saved_model_half_plus_three")
    testing.write_half_plus_two_tf1(wrong + "-wrong", conformance.VERSION, plus=3.5)   # y = 4.5, not 4.0
    os.rename(wrong, wrong + "-right")
    os.rename(wrong + "-wrong", wrong)

    results = conformance.run(testdata, work).results
    failed = sorted(name for name, ok in results if not ok)
    assert failed == ["config file polled every 1 s: half_plus_two, then half_plus_three = 4.0",
                      "model config: half_plus_three y = 4.0",
                      "model config: half_plus_three y = 4.0, no output_filter"]
    assert len(results) >= 34   # every other check of the run passed
