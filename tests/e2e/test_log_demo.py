"""A team's own implicit log end to end: `recsys demo --data DIR` on a CSV with its own column names.

The log is real MovieLens behaviour (a slice of ml-latest-small's users) rewritten the way a
production log looks: no ratings (every row an engagement), ISO 8601 times, a customer/sku header,
an items file with other names and comma-separated categories, and two malformed rows. The items file
is the whole product range, as a shop's is: every film, plus ``UNSOLD`` editions that nobody ever buys
(each a copy of a film's title, category and year, so content alone cannot tell them apart).
"""
import csv
import datetime
import json
import os
import re

import pytest

from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(not os.path.isdir(SHARED_DATA),
                                reason=f"{SHARED_DATA} not beside the clone (CI has it)")

USERS = 150   # of 610: about a quarter of the events, so the quick demo stays quick
UNSOLD = 20_000


def write_log(d: str) -> int:
    os.makedirs(d)
    n = 0
    with open(os.path.join(SHARED_DATA, "ratings.csv"), encoding="utf-8") as f, \
            open(os.path.join(d, "interactions.csv"), "w", newline="", encoding="utf-8") as out:
        rows = csv.reader(f)
        next(rows)
        w = csv.writer(out)
        w.writerow(["customer_id", "sku", "event_time"])
        for user, item, _, ts in rows:
            if int(user) <= USERS:
                when = datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc).isoformat()
                w.writerow([f"c{user}", f"m{item}", when])
                n += 1
        w.writerow(["c1", "m1", "last tuesday"])
        w.writerow(["c1", "m1"])
    with open(os.path.join(SHARED_DATA, "movies.csv"), encoding="utf-8") as f, \
            open(os.path.join(d, "items.csv"), "w", newline="", encoding="utf-8") as out:
        rows = csv.reader(f)
        next(rows)
        w = csv.writer(out)
        w.writerow(["product_id", "name", "category", "year"])
        films = []
        for item, title, genres in rows:
            m = re.search(r"\((\d{4})\)\s*$", title)
            films.append([title[:m.start()].strip() if m else title,
                          "" if genres.startswith("(") else ", ".join(genres.split("|")), m.group(1) if m else ""])
            w.writerow([f"m{item}"] + films[-1])
        for n_unsold in range(UNSOLD):
            title, category, year = films[n_unsold % len(films)]
            w.writerow([f"e{n_unsold}", f"{title} (edition {n_unsold // len(films) + 1})", category, year])
    return n


def test_demo_on_an_implicit_log(tmp_path):
    from recsys import cli

    data = str(tmp_path / "shop")
    n = write_log(data)
    workdir = str(tmp_path / "runs")
    assert cli.main(["--workdir", workdir, "--set", "eval.tune_baselines=false", "--set", "export.version=1",
                     "demo", "--quick", "--data", data]) == 0
    run_dir = os.path.join(workdir, "log-shop")
    with open(os.path.join(run_dir, "demo_summary.json"), encoding="utf-8") as f:
        s = json.load(f)
    m = s["metrics"]
    assert m["two_tower"]["n_queries"] == m["ease"]["n_queries"] > 100
    assert m["two_tower"]["recall@50"] > m["popularity"]["recall@50"], "learns from real behaviour"
    with open(os.path.join(run_dir, "evaluation", "retrieval", "metrics.json"), encoding="utf-8") as f:
        unseen = json.load(f)["unseen_items"]
    assert unseen["left_out"] >= UNSOLD and unseen["pickup_ratio"] < 0.05, "unsold editions not in the index"
    r = s["ranking_metrics"]
    assert "dcn" in r and "global_mean" not in r, "no ratings: no rating yardsticks, no NaN rows"
    with open(os.path.join(run_dir, "raw", "dead_letter", "source.jsonl"), encoding="utf-8") as f:
        dead = [json.loads(line) for line in f]
    assert [d["line"] for d in dead] == [n + 2, n + 3], "both malformed rows kept, with their line numbers"
    assert len(s["recommend_top10"]) == 10 and all(i.startswith("m") for i in s["recommend_top10"]), "no edition"
