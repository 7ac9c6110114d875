"""recsys.child.JsonLinesChild: the failure paths both demo children rely on (no TensorFlow here)."""
import subprocess
import time

import pytest

from recsys.child import JsonLinesChild


def test_a_child_that_dies_starting_up_is_reported_not_raised_on_send():
    child = JsonLinesChild("recsys.no_such_module")
    child.proc.wait(timeout=30)
    child.send({"task": "anything"})          # a broken pipe is not an error here
    assert child.read() is None               # ... the read says the child is gone
    failure = child.failure()
    assert "exit status 1" in failure and "No module named recsys.no_such_module" in failure
    child.close()


def test_finish_past_its_timeout_kills_the_child():
    child = JsonLinesChild("timeit", "-n", "1", "-r", "1", "-s", "import time", "time.sleep(60)")
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        child.finish(timeout=1.0)
    assert time.monotonic() - t0 < 30
    assert child.proc.poll() is not None, "killed, not left running"


def test_finish_returns_the_lines_the_child_printed():
    child = JsonLinesChild("json.tool", "--compact")   # echoes the one JSON document it reads, compacted
    child.send({"a": [1, 2]})
    assert child.finish(timeout=30) == ['{"a":[1,2]}']
    child.close()
