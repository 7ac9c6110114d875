"""Validation ranges must accept what real catalogues hold (MovieLens has films from 1902)."""
from preprocessing.sources import tables


def test_pre_1970_release_dates_are_valid_and_absurd_ones_are_not():
    assert tables._field_problem("item_release_ts", -2_177_452_800) is None        # 1901
    assert tables._field_problem("item_release_ts", 0) is None                     # 0 = unknown
    assert "outside" in tables._field_problem("item_release_ts", -10_000_000_000)  # before 1800
    assert "outside" in tables._field_problem("user_signup_ts", -1)
