"""The pre-training check fails in seconds, with one line, on what an export could not hold."""
import json
import os

import pytest

from preprocessing.sources.tables import DataError
from trainer import preflight


def _version(tmp_path, items, train=True):
    d = tmp_path / "v1"
    os.makedirs(d / "transformed")
    if train:
        (d / "transformed" / "train-00000-of-00001.tfrecord.gz").write_bytes(b"")
    with open(d / "items.jsonl", "w", encoding="utf-8") as f:
        for row in items:
            f.write(json.dumps(row) + "\n")
    return str(d)


def test_non_ascii_and_non_latin_text_passes(tmp_path):
    items = [{"item_id": "映画-1", "item_title": "Misérables, Les (1995)", "item_genres": "Drama"},
             {"item_id": "фильм-2", "item_title": "千と千尋の神隠し", "item_genres": "Animation|Fantasy"}]
    assert preflight.check(_version(tmp_path, items))["items"] == 2


@pytest.mark.parametrize("items, train, message", [
    ([{"item_id": "i1", "item_title": "bad \ud800 surrogate"}], True, "item_title of item 'i1' is not valid UTF-8"),
    ([{"item_id": "i1"}, {"item_id": "i1"}], True, "duplicate item_id 'i1'"),
    ([{"item_id": ""}], True, "empty item_id"),
    ([{"item_id": "i1"}], False, "no train split"),
])
def test_problems_are_one_clear_line(tmp_path, items, train, message):
    with pytest.raises(DataError) as e:
        preflight.check(_version(tmp_path, items, train))
    assert message in str(e.value) and "\n" not in str(e.value)
