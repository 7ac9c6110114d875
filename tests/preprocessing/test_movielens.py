"""Loaders on small MovieLens-format fixtures written here (the real files are never copied in)."""
import json
import os

import pytest

from preprocessing.sources import movielens
from preprocessing.sources.tables import DataError


def write(path, name, text, encoding="utf-8"):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "w", encoding=encoding) as f:
        f.write(text)


def ml100k(path, bad_lines=""):
    flags = lambda i: "|".join("1" if j == i else "0" for j in range(19))  # noqa: E731
    write(path, "u.item", "1|Toy Story (1995)|01-Jan-1995||http://x|" + flags(3) + "\n"
                          "2|GoldenEye (1995)|01-Jan-1995||http://x|" + flags(1) + "\n", "latin-1")
    write(path, "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    write(path, "u.data", "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t878542960\n" + bad_lines)


def ml1m(path, bad_lines=""):
    write(path, "movies.dat", "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Heat (1995)::Action\n", "latin-1")
    write(path, "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n", "latin-1")
    write(path, "ratings.dat", "1::1::5::978300760\n1::2::3::978302109\n2::2::4::978301968\n" + bad_lines, "latin-1")


def latest(path, bad_lines=""):
    write(path, "movies.csv", 'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n'
                              "2,Heat (1995),Action|Crime\n3,Nothing (2001),(no genres listed)\n")
    write(path, "tags.csv", "userId,movieId,tag,timestamp\n1,2,heist,1445714994\n2,2,Heist,1445714995\n")
    write(path, "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,4.5,964981247\n"
                               "2,3,2.5,964982224\n" + bad_lines)


@pytest.mark.parametrize("layout,maker", [("100k", ml100k), ("1m", ml1m), ("latest", latest)])
def test_each_layout_maps_onto_the_schema(tmp_path, layout, maker):
    maker(str(tmp_path))
    assert movielens.detect_layout(str(tmp_path)) == layout
    t = movielens.load(str(tmp_path))
    assert t.num_interactions == 3 and not t.dead_letters
    assert set(t.interactions) == {"user_id", "item_id", "timestamp", "rating", "click", "device"}
    assert t.interactions["timestamp"] == sorted(t.interactions["timestamp"])
    assert all(c == (1.0 if r >= 4 else 0.0) for r, c in zip(t.interactions["rating"], t.interactions["click"]))
    assert all(ts > 0 for ts in t.items["item_release_ts"][:2]), "release year parsed from the title"
    assert "(1995)" not in " ".join(t.items["item_title"])


def test_latest_layout_details(tmp_path):
    latest(str(tmp_path))
    t = movielens.load(str(tmp_path))
    items = dict(zip(t.items["item_id"], zip(t.items["item_title"], t.items["item_genres"])))
    assert items["1"] == ("American President, The", "Comedy|Drama|Romance"), "quoted comma in a CSV title"
    assert items["3"][1] == "", "'(no genres listed)' means no genres"
    assert items["2"][0] == "Heat", "tags.csv is not read: titles stay titles (tags come after the fact)"


def test_1m_demographics(tmp_path):
    ml1m(str(tmp_path))
    t = movielens.load(str(tmp_path))
    ages = dict(zip(t.users["user_id"], t.users["user_age_bucket"]))
    assert ages == {"1": "18-24", "2": "55+"}


@pytest.mark.parametrize("maker,bad", [
    (ml100k, "1\t1\tfive\t874965758\n1\t99\t4\t874965758\nnot enough fields\n"),
    (ml1m, "1::1::9::978300760\n1::1::4\n"),
    (latest, "1,1,4.0\n1,1,abc,964982703\n"),
])
def test_malformed_lines_become_dead_letters_or_an_error(tmp_path, maker, bad):
    maker(str(tmp_path), bad)
    n_bad = bad.count("\n")
    dead_path = str(tmp_path / "dead" / "source.jsonl")
    with pytest.raises(DataError, match="malformed") as err:
        movielens.load(str(tmp_path), max_bad_fraction=0.01, dead_letter_path=dead_path)
    assert dead_path in str(err.value)
    rows = [json.loads(line) for line in open(dead_path)]
    assert len(rows) == n_bad and all(r["reason"] and r["line"] > 0 for r in rows)
    t = movielens.load(str(tmp_path), max_bad_fraction=0.9)
    assert t.num_interactions == 3 and len(t.dead_letters) == n_bad, "good rows kept, bad rows counted"


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no MovieLens ratings file"):
        movielens.detect_layout(str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data",
                                                   "ml-latest-small")), reason="shared MovieLens data absent")
def test_real_ml_latest_small_loads_cleanly():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "ml-latest-small")
    t = movielens.load(path)
    assert t.num_interactions == 100836 and not t.dead_letters
    assert len(t.users["user_id"]) == 610


def test_ratings_csv_without_a_header_keeps_its_first_row(tmp_path):
    latest(str(tmp_path))
    body = open(tmp_path / "ratings.csv").read().split("\n", 1)[1]
    (tmp_path / "ratings.csv").write_text(body)          # used to lose "1,1,4.0,..." as the "header"
    t = movielens.load(str(tmp_path))
    assert t.num_interactions == 3 and not t.dead_letters
    assert ("1", "1") in set(zip(t.interactions["user_id"], t.interactions["item_id"]))


def test_out_of_range_values_and_bad_utf8_are_dead_letters(tmp_path):
    bad = ("1,2,99,964982703\n1,2,-5,964982703\n1,2,NaN,964982703\n1,2,inf,964982703\n"
           "1,2,4.0,4102444800\n1,2,4.0,99999999999999999999\n")
    latest(str(tmp_path), bad)
    with open(tmp_path / "ratings.csv", "ab") as f:
        f.write(b"1,\xff\xfe2,4.0,964982703\n")
    with open(tmp_path / "movies.csv", "ab") as f:
        f.write(b"4,Caf\xe9 (1999),Drama\n")              # latin-1 in a UTF-8 file
    t = movielens.load(str(tmp_path), max_bad_fraction=0.9)
    assert t.num_interactions == 3
    reasons = {d["text"]: d["reason"] for d in t.dead_letters}
    for text, why in (("99", "out of range"), ("-5", "out of range"), ("NaN", "out of range"),
                      ("inf", "out of range"), ("4102444800", "future"), ("99999999999999999999", "future")):
        assert any(k.split("\t")[2:4].__contains__(text) and why in r for k, r in reasons.items()), (text, reasons)
    assert reasons["1,\\xff\\xfe2,4.0,964982703"].startswith("invalid utf-8")
    assert reasons["4,Caf\\xe9 (1999),Drama"].startswith("invalid utf-8")
    assert "4" not in t.items["item_id"] and not any("\ufffd" in x for x in t.items["item_title"])


def test_dat_titles_read_right_in_latin_1_or_utf_8(tmp_path):
    """ML-1M's .dat files are Latin-1; the same layout written as UTF-8 (ML-10M's layout, re-encoded copies)
    must not turn 'Misérables' into mojibake, and a Latin-1 file must not lose its accented titles."""
    for encoding in ("latin-1", "utf-8"):
        d = tmp_path / encoding
        ml1m(str(d))
        write(str(d), "movies.dat", "1::Misérables, Les (1995)::Drama|Musical\n2::Heat (1995)::Action\n", encoding)
        t = movielens.load(str(d))
        titles = dict(zip(t.items["item_id"], t.items["item_title"]))
        assert titles["1"] == "Misérables, Les" and not t.dead_letters, encoding


def test_a_movie_row_without_an_id_is_a_dead_letter_not_an_item(tmp_path):
    """A movies.csv row with an empty id had become a catalogue item with the id '' (and was recommendable)."""
    d = str(tmp_path)
    write(d, "movies.csv", "movieId,title,genres\n1,Toy Story (1995),Animation\n,Orphan (2000),Drama\n"
                           "2,Jumanji (1995),Adventure\n")
    write(d, "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n2,2,3.0,964982704\n")
    t = movielens.load(d)
    assert t.items["item_id"] == ["1", "2"]
    assert [(x["file"], x["line"], x["reason"]) for x in t.dead_letters] == [("movies.csv", 3, "empty movie id")]
