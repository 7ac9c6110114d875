"""The one text-table formatter used by evaluation reports, benchmarks and `recsys report`."""
from trainer.text_table import Column, format_cell, format_table


def test_metrics_table_with_fixed_float_format():
    rows = [{"model": "popularity", "recall@10": 0.1234567, "n": 10},
            {"model": "two_tower", "recall@10": 0.5}]
    assert format_table(rows, title="eval", float_fmt=".4f") == (
        "eval\n"
        "model       recall@10   n\n"
        "----------  ---------  --\n"
        "popularity     0.1235  10\n"
        "two_tower      0.5000   -")
    assert format_table(rows, columns=["recall@10"], float_fmt=".4f").splitlines()[-1] == "   0.5000"


def test_column_specs_headers_formats_and_alignment():
    text = format_table([{"a": "x", "b": 1.23456, "c": 1000}, {"a": "longer", "b": None, "c": 5}],
                        [("a", "name"), ("b", "val", ".2f"), Column("c", "n"), Column("d", "", align="<")],
                        title="T")
    assert text.splitlines() == ["T",                          # number columns right-aligned, headers too
                                 "name     val      n",
                                 "------  ----  -----",          # no rule under an empty header
                                 "x       1.23  1,000  -",
                                 "longer     -      5  -"]


def test_default_cell_formats_follow_magnitude():
    assert [format_cell(v) for v in (None, True, 1234567, 0.5, 123.456, 2e-5, 3e7, float("nan"), "é")] == \
        ["-", "yes", "1,234,567", "0.500", "123.5", "2e-05", "3e+07", "nan", "é"]
    assert format_cell(3, ".2f") == "3.00" and format_cell("x", ".2f") == "x"
