"""The generic interaction-log source on small CSV fixtures written here."""
import gzip
import json
import os

import pytest

from preprocessing.sources import detect, interaction_log as log
from preprocessing.sources.tables import DataError


def write(path, name, text, encoding="utf-8"):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "w", encoding=encoding, newline="") as f:
        f.write(text)
    return os.path.join(path, name)


def test_aliases_iso_times_and_an_implicit_log(tmp_path):
    d = str(tmp_path)
    write(d, "interactions.csv", "Customer_ID,SKU,event_time,platform\n"
                                 "c2,p1,2024-03-01T12:00:00Z,web\n"
                                 "c1,p2,2024-03-01 12:00:00+02:00,mobile\n"
                                 "c1,p1,2024-02-29,\n")
    t = log.load(d)
    assert t.interactions["timestamp"] == [1709164800, 1709287200, 1709294400], "sorted by time; offsets honoured"
    assert t.interactions["user_id"] == ["c1", "c1", "c2"]
    assert t.interactions["rating"] == [0.0] * 3 and t.interactions["click"] == [1.0] * 3, "implicit: engagements"
    assert t.interactions["device"] == ["unknown", "mobile", "web"]
    assert t.items["item_id"] == ["p1", "p2"] and t.items["item_title"] == ["", ""], "items the log names, no content"
    assert t.users["user_age_bucket"] == ["unknown", "unknown"]


def test_explicit_ratings_rescale_and_unix_units(tmp_path):
    path = write(str(tmp_path), "log.tsv", "user\titem\tscore\tts\n"
                                           "u1\ti1\t10\t1700000000\n"        # seconds
                                           "u1\ti2\t1\t1700000001000\n"      # milliseconds
                                           "u2\ti1\t7\t1700000002000000\n"   # microseconds
                                           "u2\ti3\t0\t1700000003\n")        # 0: no rating
    t = log.load(path, rating_max=10)
    assert t.interactions["timestamp"] == [1700000000, 1700000001, 1700000002, 1700000003]
    assert t.interactions["rating"] == [5.0, 0.5, 3.5, 0.0]
    assert t.interactions["click"] == [1.0, 0.0, 0.0, 1.0], "rated 4+ of 5 engages; an unrated event does"
    with pytest.raises(DataError, match="malformed"):
        log.load(path)   # 10 and 7 are outside 0..5: dead letters, too many of them


def test_items_users_and_explicit_column_names(tmp_path):
    d = str(tmp_path)
    write(d, "events.csv", "who;what;when;stars\nu1;a;1700000000;4\nu2;b;1700000100;2\n")
    write(d, "items.csv", 'id;title;genres;price;release\na;"Café; ""Noir""";Drama, Crime;9.5;1995\n'
                          "b;Heat;Action|Crime;;2001-06-15\nc;Unseen;Comedy;3;\n")
    write(d, "users.csv", "user;age;country\nu1;29;DE\nu2;55+;\n")
    t = log.load(d, columns="user_id=who,item_id=what,timestamp=when")
    items = {i: (ti, g, p, r) for i, ti, g, p, r in zip(*(t.items[k] for k in
             ("item_id", "item_title", "item_genres", "item_price", "item_release_ts")))}
    assert items["a"] == ('Café; "Noir"', "Drama|Crime", 9.5, 788918400), "quotes, delimiter inside quotes"
    assert items["b"][2:] == (0.0, 992563200) and items["c"][0] == "Unseen", "catalogue items with no events stay"
    assert dict(zip(t.users["user_id"], t.users["user_age_bucket"])) == {"u1": "25-34", "u2": "55+"}
    assert dict(zip(t.users["user_id"], t.users["user_country"])) == {"u1": "DE", "u2": "unknown"}


def test_bad_rows_become_dead_letters_with_line_numbers(tmp_path):
    good = "".join(f"u{i},i{i % 7},{1700000000 + i}\n" for i in range(300))
    path = write(str(tmp_path), "interactions.csv", "user_id,item_id,timestamp\n" + good +
                 "u1,i1,yesterday\n"          # unparsable time
                 "u1,,1700000000\n"           # empty item
                 "u1,i1\n"                    # too few fields
                 "u1,i1,99999999999999999999\n")   # the far future
    t = log.load(path, max_bad_fraction=0.05)
    assert t.num_interactions == 300
    reasons = {d["line"]: d["reason"] for d in t.dead_letters}
    assert sorted(reasons) == [302, 303, 304, 305]
    assert "ISO 8601" in reasons[302] and "empty" in reasons[303] and "fields" in reasons[304]
    dead = str(tmp_path / "dead.jsonl")
    with pytest.raises(DataError, match=r"4 of 304 rows .* dead letters in"):
        log.load(path, max_bad_fraction=0.01, dead_letter_path=dead)
    assert len(open(dead).read().splitlines()) == 4


def test_latin_1_fields_read_right_and_gzip_and_bom(tmp_path):
    d = str(tmp_path)
    with gzip.open(os.path.join(d, "interactions.csv.gz"), "wb") as f:
        f.write("\ufeffuser_id,item_id,timestamp\nu1,i1,1700000000\n".encode("utf-8"))
    write(d, "items.csv", "item_id,title\ni1,Les Misérables\n", encoding="latin-1")
    t = log.load(d)
    assert t.num_interactions == 1 and t.items["item_title"] == ["Les Misérables"], "not mojibake, not a crash"


def test_clear_errors(tmp_path):
    d = str(tmp_path)
    with pytest.raises(DataError, match="no interaction log"):
        log.load(d)
    write(d, "interactions.csv", "user_id,thing,timestamp\nu1,i1,1\n")
    with pytest.raises(DataError, match=r"no column for item_id .* data.columns=item_id=COLUMN"):
        log.load(d)
    with pytest.raises(DataError, match="no column 'sku'"):
        log.load(d, columns="item_id=sku")
    with pytest.raises(DataError, match="unknown field 'itemid'"):
        log.load(d, columns="itemid=thing")
    with pytest.raises(DataError, match="does not exist"):
        log.load(str(tmp_path / "nope.csv"))


def test_detect_tells_movielens_from_a_log(tmp_path):
    ml = str(tmp_path / "ml")
    write(ml, "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    write(ml, "movies.csv", "movieId,title,genres\n1,Heat (1995),Action\n")
    assert detect(ml) == "movielens"
    own = str(tmp_path / "own")
    write(own, "ratings.csv", "user,item,rating,time\nu1,i1,4,2024-01-01\n")   # no movies file: a log
    assert detect(own) == "csv"
    assert detect(os.path.join(own, "ratings.csv")) == "csv"
    with pytest.raises(DataError, match="MovieLens directory"):
        detect(str(tmp_path))


def test_the_cli_writes_raw_tables_from_a_log(tmp_path):
    from recsys import cli

    path = write(str(tmp_path / "in"), "clicks.csv", "user_id,item_id,timestamp\nu1,i1,1700000000\nu2,i1,1700000001\n")
    assert cli.main(["--workdir", str(tmp_path / "runs"), "data", "csv", "--path", path]) == 0
    raw = tmp_path / "runs" / "log-clicks" / "raw"
    with gzip.open(raw / "interactions.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    assert [r["user_id"] for r in rows] == ["u1", "u2"] and rows[0]["click"] == 1.0


def test_a_log_without_a_header_line(tmp_path):
    path = write(str(tmp_path), "ratings.tsv", "7\t1700000000\t42\t4\n8\t1700000100\t42\t5\n")
    with pytest.raises(DataError, match="no header line"):
        log.load(path)   # user, time, item, rating: no order is guessed but the usual ones
    t = log.load(path, header="user_id,timestamp,item_id,rating")
    assert t.interactions["user_id"] == ["7", "8"] and t.interactions["rating"] == [4.0, 5.0], "first row kept"


def test_excel_unicode_text_is_utf16_with_tabs(tmp_path):
    d = str(tmp_path)
    write(d, "interactions.txt.tsv", "userId\tmovieId\trating\ttimestamp\r\nzoë\t42\t4\t1700000000\r\n",
          encoding="utf-16")
    write(d, "items.tsv", "movieId\ttitle\n42\tAmélie (2001)\n", encoding="utf-16")
    t = log.load(os.path.join(d, "interactions.txt.tsv"))
    assert t.interactions["user_id"] == ["zoë"] and t.interactions["rating"] == [4.0]
    os.rename(os.path.join(d, "interactions.txt.tsv"), os.path.join(d, "interactions.tsv"))
    assert log.load(d).items["item_title"] == ["Amélie (2001)"]


def test_a_semicolon_export_with_decimal_commas_and_crlf(tmp_path):
    path = write(str(tmp_path), "log.csv", "user;item;rating;timestamp\r\n1;2;4,5;1700000000\r\n2;2;3;1700000100\r\n")
    t = log.load(path)
    assert t.interactions["rating"] == [4.5, 3.0] and t.interactions["item_id"] == ["2", "2"]


def test_a_headerless_log_in_the_usual_order_is_read_and_said(tmp_path, capsys):
    amazon = write(str(tmp_path), "ratings_Books.csv", "AC4CA1,0000031852,5.0,1362960000\n"
                                                       "BC4CA2,0000031852,3.0,1362960100\n")
    t = log.load(amazon)
    assert t.interactions["user_id"] == ["AC4CA1", "BC4CA2"], "the first line is a row, not a header"
    assert t.interactions["rating"] == [5.0, 3.0] and t.interactions["timestamp"] == [1362960000, 1362960100]
    assert "has no header line; its columns read as user_id, item_id, rating, timestamp" in capsys.readouterr().out
    implicit = write(str(tmp_path), "clicks.tsv", "u1\ti9\t2024-03-01T12:00:00Z\nu2\ti9\t2024-03-02\n")
    t = log.load(implicit)
    assert t.interactions["user_id"] == ["u1", "u2"] and t.interactions["click"] == [1.0, 1.0]
    assert "user_id, item_id, timestamp" in capsys.readouterr().out


@pytest.mark.parametrize("first", [
    ["7", "42", "1700000000", "4"],        # time before the rating: the rating is not a plausible time
    ["7", "42", "4"],                       # user, item, rating: no time at all
    ["7", "42", "1700000000", "1700000000"],  # a time where the rating goes
    ["7", "", "4", "1700000000"],           # no item
    ["u", "i", "r", "t", "x"],
])
def test_guess_header_refuses_other_shapes(first):
    assert log.guess_header(first) is None


def test_a_headerless_log_of_another_shape_is_told_to_name_its_columns(tmp_path):
    """Last.fm 1K's TSV: user, ISO time, artist id, artist, track id, track; no header line."""
    path = write(str(tmp_path), "lastfm.tsv", "user_000001\t2009-05-04T23:08:57Z\tf1b1\tDeep Dish\t\tTrack\n"
                                              "user_000002\t2009-05-04T13:52:04Z\ta7f7\t坂本龍一\t\tMc2\n")
    with pytest.raises(DataError, match="no header line. name the columns with --set data.header="):
        log.load(path)
    t = log.load(path, header="user_id,timestamp,item_id,artist,track_id,track")
    assert t.interactions["item_id"] == ["a7f7", "f1b1"] and t.interactions["user_id"] == ["user_000002",
                                                                                          "user_000001"]



def test_a_header_line_is_never_second_guessed(tmp_path, capsys):
    path = write(str(tmp_path), "log.csv", "user_id,item_id,rating,timestamp\n7,42,4,1700000000\n")
    t = log.load(path)
    assert t.interactions["user_id"] == ["7"] and "no header line" not in capsys.readouterr().out


def test_json_lines_as_public_review_dumps_publish_them(tmp_path):
    d = str(tmp_path)
    with gzip.open(os.path.join(d, "reviews.jsonl.gz"), "wt", encoding="utf-8") as f:   # Amazon's layout
        f.write('{"reviewerID": "A1", "asin": "B01", "overall": 5.0, "unixReviewTime": 1400000000, '
                '"reviewText": "great, \\"really\\""}\n')
        f.write('{"reviewerID": "A2", "asin": "B02", "overall": 2.0, "unixReviewTime": 1400000100}\n')
        f.write("not json\n")
        f.write("[1, 2]\n")
    write(d, "meta.jsonl", '{"asin": "B01", "title": "Kettle", "categories": [["Home", "Kitchen"]], '
                           '"price": 12.5}\n')
    t = log.load(d, max_bad_fraction=0.5)
    assert t.interactions["user_id"] == ["A1", "A2"] and t.interactions["rating"] == [5.0, 2.0]
    assert t.interactions["click"] == [1.0, 0.0]
    items = dict(zip(t.items["item_id"], zip(t.items["item_title"], t.items["item_genres"], t.items["item_price"])))
    assert items == {"B01": ("Kettle", "Home|Kitchen", 12.5), "B02": ("", "", 0.0)}, "nested categories joined"
    assert [(x["line"], x["reason"][:8]) for x in t.dead_letters] == [(3, "not JSON"), (4, "a JSON l")]


def test_a_json_array_of_objects_reads_like_json_lines(tmp_path):
    d = str(tmp_path)
    write(d, "interactions.json", '[\n  {"user": "u1", "item": "i1", "time": "2024-03-01T10:00:00Z", "stars": 4},\n'
                                  '  {"user": "u2", "item": "i1", "time": "2024-03-02T10:00:00Z", "stars": 5},\n'
                                  '  "not an object"\n]\n')
    t = log.load(d, max_bad_fraction=0.5)
    assert t.interactions["user_id"] == ["u1", "u2"] and t.interactions["rating"] == [4.0, 5.0]
    assert [(x["line"], x["reason"]) for x in t.dead_letters] == [(3, "a JSON str, not an object")]
    write(d, "interactions.json", '[{"user": "u1", "item": "i1", "time": "2024-03-01"},')
    with pytest.raises(DataError, match="not a JSON array"):
        log.load(d)
    write(d, "interactions.json", '[1, 2]')
    with pytest.raises(DataError, match="must hold objects"):
        log.load(d)


def test_amazon_2023_reviews_join_their_meta_by_parent_asin(tmp_path):
    """Amazon Reviews 2023: reviews carry asin (a variant) and parent_asin; meta is keyed by parent_asin only."""
    d = str(tmp_path)
    write(d, "reviews.jsonl", '{"user_id": "U1", "asin": "B01-red", "parent_asin": "B01", "rating": 4.0, '
                              '"timestamp": 1588687728923}\n'
                              '{"user_id": "U2", "asin": "B01-blue", "parent_asin": "B01", "rating": 5.0, '
                              '"timestamp": 1588687729923}\n')
    write(d, "meta.jsonl", '{"parent_asin": "B01", "title": "Kettle", "main_category": "Home", "price": 12.5}\n')
    t = log.load(d)
    assert t.interactions["item_id"] == ["B01", "B01"] and t.interactions["timestamp"] == [1588687728, 1588687729]
    assert dict(zip(t.items["item_id"], t.items["item_title"])) == {"B01": "Kettle"}


def test_a_bigquery_export_reads_with_its_own_names_and_times(tmp_path):
    """GA4's BigQuery export flattened to CSV: user_pseudo_id, event_timestamp in microseconds; a hand-written
    query's TIMESTAMP column comes out as '2024-03-01 12:30:00 UTC'."""
    d = str(tmp_path)
    write(d, "events.csv", "user_pseudo_id,item_id,event_timestamp\nA.1,sku1,1709296200000000\n"
                           "A.2,sku2,2024-03-01 12:30:00 UTC\n")
    t = log.load(d)
    assert t.interactions["user_id"] == ["A.1", "A.2"] and t.interactions["timestamp"] == [1709296200] * 2


@pytest.mark.parametrize("text,expected", [
    ("Fri Sep 08 10:44:24 -0700 2017", 1504892664),     # Goodreads
    ("Fri, 08 Sep 2017 17:44:24 +0000", 1504892664),    # RFC 2822
    ("09 13, 2009", 1252800000),                        # Amazon reviewTime
    ("2009/09/13", 1252800000), ("13.09.2009", 1252800000),
    ("2009/09/13 01:30", 1252805400), ("2009/09/13 01:30:00.250", 1252805400),   # spreadsheet exports
    ("1252800000", 1252800000), ("1252800000000", 1252800000), ("2009-09-13T00:00:00+00:00", 1252800000),
    ("20090913", 1252800000),                           # compact dates (as unix seconds: a day in 1970)
    ("2009-09-13 00:00:00 UTC", 1252800000), ("2009-09-13 02:00:00.5 GMT", 1252807200),   # BigQuery CSV exports
    ("Sep 13, 2009", 1252800000), ("13 September 2009", 1252800000),
])
def test_time_formats(text, expected):
    assert log.parse_time(text) == expected


@pytest.mark.parametrize("text", ["09/13/2009", "13/09/2009", "yesterday", "", "20091399"])
def test_ambiguous_or_unknown_times_are_refused(text):
    with pytest.raises(ValueError):
        log.parse_time(text)


def test_a_us_spreadsheet_needs_its_time_format_and_says_so(tmp_path):
    path = write(str(tmp_path), "orders.csv", "Customer,Product,Date\nc1,p1,3/1/2024 1:30 PM\nc2,p1,3/2/2024 9:05 AM\n")
    with pytest.raises(DataError, match=r"month/day or day/month: give its format, --set data.time_format="):
        log.load(path)
    t = log.load(path, time_format="%m/%d/%Y %I:%M %p")
    assert t.interactions["timestamp"] == [1709299800, 1709370300], "March 1st and 2nd, UTC"
    with pytest.raises(DataError, match="does not match data.time_format"):
        log.load(path, time_format="%d.%m.%Y")
    with pytest.raises(DataError, match="not a strptime format"):
        log.load(path, time_format="%Q")
    assert log.time_parser("%Y-%m-%dT%H:%M:%S%z")("2024-03-01T14:30:00+0100") == 1709299800, "zones honoured"


def test_the_time_format_reaches_the_loader_from_the_config(tmp_path):
    from preprocessing import sources
    from recsys import config

    path = write(str(tmp_path), "orders.csv", "Customer,Product,Date\nc1,p1,03/01/2024\n")
    cfg = config.load_config(None, ["data.source=csv", f"data.path={path}", "data.time_format=%m/%d/%Y"])
    assert sources.load_source(cfg.data).interactions["timestamp"] == [1709251200]


def test_a_truncated_gzip_is_one_clear_error(tmp_path):
    rows = "".join(f"u{i},i{i},{1700000000 + i}\n" for i in range(20000))
    data = gzip.compress(("user_id,item_id,timestamp\n" + rows).encode())
    path = tmp_path / "interactions.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot read past line"):
        log.load(str(path))


def test_recsys_data_without_a_kind_reads_the_configs_source(tmp_path):
    """What the Kubernetes data Job runs: `recsys --config job.yaml data`, the config naming the source."""
    from recsys import cli

    path = write(str(tmp_path / "in"), "events.csv", "user_id,item_id,timestamp\nu1,i1,1700000000\n")
    assert cli.main(["--workdir", str(tmp_path / "runs"), "--set", "data.source=csv", "data", "--path", path]) == 0
    assert (tmp_path / "runs" / "log-events" / "raw" / "interactions.jsonl.gz").exists()


@pytest.mark.parametrize("text,expected", [
    ("12.5", 12.5), ("$12.99", 12.99), ("EUR 1,299.00", 1299.0), ("1.299,00 €", 1299.0), ("£7", 7.0),
    ("12,99", 12.99), ("1,299", 1299.0), ("$12.99 - $15.99", 12.99), ("", 0.0), ("None", 0.0), ("CHF 1'250", 1250.0),
])
def test_prices_as_catalogues_write_them(text, expected):
    assert log.parse_price(text) == pytest.approx(expected)


def test_an_unreadable_price_empties_the_price_not_the_item(tmp_path):
    """A shop's products file with currency signs once lost 80% of its items' titles and categories: the whole row
    was a dead letter for a price it could not read."""
    d = str(tmp_path)
    write(d, "events.csv", "customer_id,sku,event_time\nc1,A,2024-01-01T10:00:00Z\nc2,B,2024-01-02T10:00:00Z\n")
    write(d, "products.csv", 'product_id,product_name,category,price\nA,Kettle,Home,$12.99\nB,Lamp,Home,ask us\n')
    t = log.load(d)
    items = dict(zip(t.items["item_id"], zip(t.items["item_title"], t.items["item_genres"], t.items["item_price"])))
    assert items == {"A": ("Kettle", "Home", 12.99), "B": ("Lamp", "Home", 0.0)}
    assert [(x["line"], x["reason"].split(":")[0]) for x in t.dead_letters] == \
        [(3, "kept, without the unreadable field")]


def test_event_types_as_retailrocket_and_ga4_write_them(tmp_path, capsys):
    """Retailrocket's ``event`` column: views are interactions (click 0), carts and purchases engagements
    (click 1); impressions and removals are not interactions at all. ``data.event_types`` keeps only some."""
    path = write(str(tmp_path), "events.csv",
                 "timestamp,visitorid,event,itemid,transactionid\n"
                 "1433221332117,257597,view,355908,\n"
                 "1433224214164,992329,view,248676,\n"
                 "1433221999827,111016,addtocart,318965,\n"
                 "1433222276276,483717,transaction,253185,4000\n"
                 "1433222300000,483717,remove_from_cart,253185,\n"
                 "1433222400000,257597,Impression,1,\n")
    t = log.load(path)
    i = t.interactions
    assert sorted(zip(i["user_id"], i["click"])) == [("111016", 1.0), ("257597", 0.0), ("483717", 1.0),
                                                      ("992329", 0.0)]
    assert "1" not in i["item_id"] and not t.dead_letters, "left out, not dead letters"
    out = capsys.readouterr().out
    assert "view 2 (click 0)" in out and "transaction 1 (click 1)" in out and "Impression 1 (left out)" in out
    only = log.load(path, event_types="transaction, add_to_cart").interactions
    assert sorted(only["user_id"]) == ["111016", "483717"] and only["click"] == [1.0, 1.0]
    with pytest.raises(DataError, match="no usable interactions.*event types"):
        log.load(path, event_types="purchase")
    plain = write(str(tmp_path / "plain"), "events.csv", "user,item,time\nu1,i1,2024-03-01\n")
    with pytest.raises(DataError, match="no event-type column"):
        log.load(plain, event_types="purchase")


def test_an_items_file_row_without_an_id_is_a_dead_letter_and_a_repeated_id_keeps_its_last_row(tmp_path, capsys):
    """A products row with an empty id once became a catalogue item with the id '' (recommendable, servable)."""
    d = str(tmp_path)
    write(d, "events.csv", "user,item,time\nu1,A,2024-01-01\nu2,B,2024-01-02\n")
    write(d, "products.csv", "product_id,name,category\nA,Kettle,Home\nA,Kettle v2,Kitchen\n,Orphan,Home\nB,Lamp,Home\n")
    t = log.load(d)
    assert t.items["item_id"] == ["A", "B"] and t.items["item_title"] == ["Kettle v2", "Lamp"]
    assert [(x["line"], x["reason"]) for x in t.dead_letters] == [(4, "empty item id")]
    assert "1 rows repeat an earlier item id; the last row of each is kept" in capsys.readouterr().out


def test_item_ids_written_as_floats_on_one_side_still_join_and_a_poor_join_is_reported(tmp_path, capsys):
    """A table tool writes an integer id column with a gap as floats ("123.0"): the log then joined none of
    its items file and every item lost its content without a word."""
    d = str(tmp_path)
    write(d, "events.csv", "user,item,time\nu1,1.0,2024-01-01\nu2,2.0,2024-01-02\nu3,7.0,2024-01-03\n")
    write(d, "products.csv", "product_id,name,category\n1,Kettle,Home\n2,Lamp,Home\n3,Pan,Home\n")
    t = log.load(d)
    assert t.interactions["item_id"] == ["1", "2", "7"]
    assert dict(zip(t.items["item_id"], t.items["item_title"])) == {"1": "Kettle", "2": "Lamp", "3": "Pan", "7": ""}
    out = capsys.readouterr().out
    assert "read as integers (0 -> 2 of 3 logged items" in out
    assert "1 of 3 items in the log have no row in" in out and "e.g. '7'" in out
    write(d, "products.csv", "product_id,name,category\n1.5,Kettle,Home\n2.0,Lamp,Home\n")   # ids that are not ints
    t = log.load(d)
    assert t.interactions["item_id"] == ["1.0", "2.0", "7.0"], "a join that would not improve changes nothing"
    write(d, "events.csv", "user,item,time\n10,1.0,2024-01-01\n20,2.0,2024-01-02\n30,7.0,2024-01-03\n")
    write(d, "customers.csv", "customer_id,age,country\n10.0,31,DE\n20.0,45,FR\n")   # the same, for users
    t = log.load(d)
    assert t.interactions["user_id"] == ["10", "20", "30"]
    assert dict(zip(t.users["user_id"], t.users["user_country"])) == {"10": "DE", "20": "FR", "30": "unknown"}
    assert "1 of 3 users in the log have no row in" in capsys.readouterr().out


def test_parquet_files_and_a_spark_directory_read_by_column_name_with_typed_values(tmp_path):
    """Parquet as warehouses export it: typed columns (timestamps with a unit and zone, dictionary-encoded ids,
    list genres, dates, NaN and null), an items file beside it, and a Spark output directory of parts."""
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    d = str(tmp_path / "shop")
    os.makedirs(d)
    when = pa.array([datetime.datetime(2024, 3, 1, 12, 0, 0, 123456), datetime.datetime(2024, 3, 1, 13), None,
                     datetime.datetime(2024, 3, 2)], pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table({"customer_id": ["c1", "c2", "c3", None],
                             "sku": pa.array(["p1", "p2", "p1", "p3"]).dictionary_encode(),
                             "event_time": when, "rating": [4.0, float("nan"), 5.0, 3.0]}),
                   os.path.join(d, "interactions.parquet"))
    pq.write_table(pa.table({"product_id": ["p1", "p2"], "name": ["Café", "Kettle"], "category": [["Home", "Kitchen"], []],
                             "release_date": pa.array([datetime.date(2020, 1, 2), None], pa.date32()),
                             "price": [9.5, None]}), os.path.join(d, "products.parquet"))
    assert detect(d) == "csv"
    t = log.load(d, columns="item_id=sku", max_bad_fraction=0.5)
    assert t.interactions["user_id"] == ["c1", "c2"] and t.interactions["timestamp"] == [1709294400, 1709298000]
    assert t.interactions["rating"] == [4.0, 0.0], "NaN is a missing rating, as an empty CSV cell"
    assert [(x["line"], x["reason"][:12]) for x in t.dead_letters] == [(3, "unparsable v"), (4, "empty user o")]
    items = dict(zip(t.items["item_id"], zip(t.items["item_title"], t.items["item_genres"], t.items["item_price"],
                                             t.items["item_release_ts"])))
    assert items == {"p1": ("Café", "Home|Kitchen", 9.5, 1577923200), "p2": ("Kettle", "", 0.0, 0)}

    spark = str(tmp_path / "events.parquet")
    os.makedirs(spark)
    for k in range(2):
        pq.write_table(pa.table({"user": [f"u{k}", f"u{k}"], "item": [7, 8],
                                 "ts": pa.array([1700000000 + k, 1700000100 + k], pa.int64())}),
                       os.path.join(spark, f"part-0000{k}-abc.snappy.parquet"))
    for marker in ("_SUCCESS", ".part-00000-abc.snappy.parquet.crc"):
        open(os.path.join(spark, marker), "w").close()
    t = log.load(spark)
    assert t.interactions["user_id"] == ["u0", "u1", "u0", "u1"] and t.interactions["item_id"] == ["7", "7", "8", "8"]
    pq.write_table(pa.table({"user": ["u9"], "sku": [9], "ts": [1700000200]}), os.path.join(spark, "part-00002.parquet"))
    with pytest.raises(DataError, match="part-00002.parquet: no column item .*needs the same columns"):
        log.load(spark)


def test_parquet_items_join_a_csv_log_and_bad_parquet_is_one_clear_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = str(tmp_path)
    write(d, "events.csv", "user_id,item_id,timestamp\nu1,10,1700000000\nu2,11,1700000100\n")
    pq.write_table(pa.table({"item_id": [10, 11], "title": ["A", "B"], "genres": ["x|y", "z"],
                             "released": pa.array([1_600_000_000_000, None], pa.timestamp("ms"))}),
                   os.path.join(d, "items.parquet"))
    t = log.load(d)
    assert dict(zip(t.items["item_id"], zip(t.items["item_title"], t.items["item_genres"], t.items["item_release_ts"]))) \
        == {"10": ("A", "x|y", 1_600_000_000), "11": ("B", "z", 0)}
    with open(os.path.join(d, "items.parquet"), "rb") as f:
        whole = f.read()
    for name, data in (("interactions.parquet", b"PAR1 not parquet"), ("cut.parquet", whole[: len(whole) // 2])):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        with pytest.raises(DataError, match="not a readable Parquet file"):
            log.load(os.path.join(d, name))
    empty = tmp_path / "empty.parquet"
    empty.mkdir()
    with pytest.raises(DataError, match="no Parquet part files"):
        log.load(str(empty))
