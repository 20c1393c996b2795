"""The staleness assessment as the merchandisers' pages show it (#20): "days since" never stands for "days of
history", and an undo puts a product back as it was before the decision it takes back."""

import pandas as pd

from tests.review.test_staleness import NOW, add_product, ago, assessed, con, decide, history  # noqa: F401


def test_days_since_the_last_receipt_is_empty_when_there_is_none_on_record(con):  # noqa: F811
    history(con, 81)
    add_product(con, "NEVER", 3.0)
    row = assessed(con)["NEVER"]
    assert "no receipt on record (81 days of history)" in list(row["reasons"])
    assert pd.isna(row["days_since_receipt"]) and pd.isna(row["days_since_order"])  # not 81: there is none
    assert assessed(con)["OTHER"]["days_since_receipt"] == 5  # its last receipt


def undo(con, sku: str, undoes: int, days_ago: float) -> None:  # noqa: F811
    n = con.execute("SELECT count(*) FROM review_decisions").fetchall()[0][0] + 1
    con.execute(
        """INSERT INTO review_decisions (decision_id, sku, decision, note, reviewer, decided_at, _batch_id, _raw,
        _loaded_at, undoes) VALUES (?, ?, 'undo', '', 'maria', ?, 'b', '{}', ?, ?)""",
        [n, sku, ago(days_ago), NOW, undoes],
    )


def test_an_undo_brings_back_the_state_before_the_decision(con):  # noqa: F811
    history(con, 100)
    add_product(con, "P", 3.0)
    assert assessed(con)["P"]["review_state"] == "never_reviewed"
    decide(con, "P", "keep", 5)  # decision 1
    assert assessed(con)["P"]["review_state"] == "not_due"
    undo(con, "P", 1, 4)
    row = assessed(con)["P"]
    assert (row["review_state"], row["in_queue"]) == ("never_reviewed", True)

    decide(con, "P", "refresh_listing", 200)  # an older decision in force (3) comes back when a later one is undone
    decide(con, "P", "keep", 3)  # 4
    undo(con, "P", 4, 2)
    row = assessed(con)["P"]
    assert (row["last_decision"], row["review_state"]) == ("refresh_listing", "due")
