"""QA's entries in the app store (issue #20): a lot's second result is an explicit amendment that keeps the
first, superseded; a form submission stores once however often it is sent; a CSV's problems come grouped by
reason with their rows, every bad cell is a problem of its row (never an exception), and a file of bad rows
is counted past a cap instead of collected; the lots are searched by SKU, lot, supplier and day received."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cx_pipeline.core import appstore
from cx_pipeline.quality import inspections
from cx_pipeline.quality.checklists import load_checklists
from cx_pipeline.quality.inspections import Entry, InspectionError, LotSearch

CHECKLISTS = load_checklists()
APPAREL = CHECKLISTS.items("apparel")
NOW = datetime(2026, 11, 18, 23, 30, tzinfo=UTC)
RECEIVED = NOW - timedelta(days=2)
HEADER = "receipt_id,line_no,item,critical,major,minor"


@pytest.fixture
def store(tmp_path: Path):
    with appstore.connect(tmp_path / "app.sqlite") as s:
        lots = pd.DataFrame(
            [
                ("RCV-1", 1, "SKU-A", "Slim Jeans", "apparel", "SUP-01", "WH-EAST", 1000, RECEIVED),
                ("RCV-1", 2, "SKU-B", "Smart Speaker", "electronics", "SUP-02", "WH-EAST", 40, RECEIVED),
                (
                    "RCV-2",
                    1,
                    "SKU-C",
                    "Classic Hoodie",
                    "apparel",
                    "SUP-01",
                    "WH-WEST",
                    12,
                    RECEIVED - timedelta(days=5),
                ),
                ("PO/7/A", 3, "SKU-A", "Slim Jeans", "apparel", "SUP_9", "WH-WEST", 12, RECEIVED - timedelta(days=9)),
            ],
            columns=list(inspections.Lot.__dataclass_fields__),
        )
        inspections.publish_lots(s, [inspections.lot_tuples(lots)], NOW, inspections.LotWindow(pending_days=30))
        yield s


def entry(receipt: str = "RCV-1", line: int = 1, sizing_major: int = 0) -> Entry:
    counts = {(item, s): 0 for item in APPAREL for s in ("critical", "major", "minor")}
    return Entry(receipt, line, counts | {("sizing", "major"): sizing_major})


def rows(receipt: str = "RCV-1", line: int = 1, major: str = "0") -> list[str]:
    return [f"{receipt},{line},{item},0,{major if item == 'sizing' else 0},0" for item in APPAREL]


def problems_of(store, text: str, **options) -> list[str]:
    with pytest.raises(InspectionError) as error:
        inspections.import_csv(store, text, CHECKLISTS, "q", now=NOW, **options)
    return error.value.problems


def test_a_second_result_is_refused_unless_it_is_an_amendment_with_a_reason_and_both_are_kept(store):
    first = inspections.record(store, entry(), CHECKLISTS, "quinn", now=NOW - timedelta(hours=1))
    with pytest.raises(InspectionError, match=f"already has a result on record \\(inspection {first}\\)"):
        inspections.record(store, entry(sizing_major=3), CHECKLISTS, "quinn", now=NOW)
    with pytest.raises(InspectionError, match="say why"):
        inspections.record(store, entry(sizing_major=3), CHECKLISTS, "quinn", now=NOW, amends=first, amend_reason=" ")
    second = inspections.record(
        store, entry(sizing_major=3), CHECKLISTS, "ines", now=NOW, amends=first, amend_reason="recounted sizing"
    )
    # an amendment of a result that is no longer on record (someone amended it meanwhile) stores nothing
    with pytest.raises(InspectionError, match=f"inspection {first} is not the result on record"):
        inspections.record(store, entry(), CHECKLISTS, "quinn", now=NOW, amends=first, amend_reason="late")

    history = inspections.lot_history(store, "RCV-1", 1)
    assert [(h["id"], h["superseded"], h["major"], h["amends"]) for h in history] == [
        (second, False, 3, first),
        (first, True, 0, None),
    ]
    assert history[0]["amend_reason"] == "recounted sizing"
    assert history[0]["inspected_at"] == history[1]["inspected_at"]  # the amendment keeps the inspection's time
    header, _ = inspections.inspection(store, first)
    assert header["superseded_by"] == second
    listed = inspections.lots_page(store, LotSearch(pending_only=False)).rows
    assert [(r["inspection_id"], r["entries"]) for r in listed if r["receipt_id"] == "RCV-1" and r["line_no"] == 1] == [
        (second, 2)
    ]  # the list shows the latest, once


def test_a_form_submitted_twice_stores_once_and_answers_as_the_first(store):
    token = "a-token-of-the-form-0001"
    ids = {inspections.record(store, entry(), CHECKLISTS, "quinn", now=NOW, submission=token) for _ in range(5)}
    assert len(ids) == 1 and store.execute("SELECT count(*) FROM inspections").fetchone()[0] == 1


@pytest.mark.parametrize(
    "cell", ["inf", "-inf", "nan", "NaN", "1e400", "1.5", "", "99999999999999999999", "x", "-1", "١"]
)
def test_every_bad_number_is_a_problem_of_its_row_never_an_exception(store, cell):
    for column in ("line_no", "critical", "major", "minor"):
        good = [dict(zip(HEADER.split(","), r.split(","), strict=True)) for r in rows()]
        good[2][column] = cell  # row 4
        text = "\n".join([HEADER, *(",".join(r.values()) for r in good)]) + "\n"
        if cell == "" and column != "line_no":
            assert inspections.import_csv(store, text, CHECKLISTS, "q", now=NOW) == 1  # an empty count is 0
            store.execute("DELETE FROM inspection_defects")
            store.execute("DELETE FROM inspections")
            continue
        problems = problems_of(store, text)
        reason = "line_no is not a whole number" if column == "line_no" else f"{column} is not a whole number >= 0"
        assert f"{reason}: row 4" in problems, (column, cell, problems)


def test_the_same_problem_on_many_rows_is_one_line_with_their_ranges(store):
    bad = [r.replace(",1,", ",one,", 1) for r in rows()] * 8  # rows 2-41, all with line_no "one"
    text = "\n".join([HEADER, *rows("RCV-2"), *bad[:3], *rows("RCV-1", 2)[:0], *bad[3:]]) + "\n"
    problems = problems_of(store, text)
    assert problems[0] == "line_no is not a whole number: rows 7-46"
    scattered = [*rows("RCV-2")[:2], bad[0], rows("RCV-2")[2], bad[1], *rows("RCV-2")[3:], *bad[2:5]]
    problems = problems_of(store, "\n".join([HEADER, *scattered]) + "\n")
    assert problems[0] == "line_no is not a whole number: rows 4, 6, 9-11"


def test_a_huge_file_of_bad_rows_is_counted_past_the_cap_not_collected(store):
    count = inspections.MAX_PROBLEM_ROWS * 3
    text = HEADER + "\n" + "RCV-1,inf,sizing,0,0,0\n" * count
    with pytest.raises(InspectionError) as raised:
        inspections.import_csv(store, text, CHECKLISTS, "q", now=NOW)
    error = raised.value
    assert error.count == count
    assert error.problems[0].startswith("line_no is not a whole number: rows 2-")
    assert error.problems[-1] == f"and {count - inspections.MAX_PROBLEM_ROWS:,} more problems not shown"
    assert len(error.problems) == 2


def test_many_different_problems_are_listed_up_to_a_limit(store):
    text = HEADER + "\n" + "".join(f"RCV-{n},1,sizing,0,0,0\n" for n in range(100, 300))
    problems = problems_of(store, text)
    assert len(problems) == inspections.SHOWN_PROBLEMS + 1
    assert problems[0] == "lot RCV-100/1 is not a received lot QA can inspect: row 2"
    assert problems[-1] == f"and {200 - inspections.SHOWN_PROBLEMS} more problems not shown"


def test_a_file_amends_only_when_told_to_with_a_reason(store):
    first = inspections.record(store, entry(), CHECKLISTS, "quinn", now=NOW)
    text = "\n".join([HEADER, *rows(major="2"), *rows("RCV-2")]) + "\n"
    assert problems_of(store, text) == [
        f"lot RCV-1/1 already has a result on record (inspection {first}): tick “amend” and say why to replace it: "
        "rows 2-6"
    ]
    assert inspections.import_csv(store, text, CHECKLISTS, "q", now=NOW, amend_reason="supplier re-check") == 2
    latest = inspections.lot_history(store, "RCV-1", 1)[0]
    assert (latest["amends"], latest["major"], latest["amend_reason"]) == (first, 2, "supplier re-check")
    assert inspections.lot_history(store, "RCV-2", 1)[0]["amends"] is None  # a first result in the same file


def test_lots_are_searched_by_sku_lot_supplier_and_day_received(store):
    def found(**search) -> list[str]:
        page = inspections.lots_page(store, LotSearch(**search))
        return sorted(f"{r['receipt_id']}/{r['line_no']}" for r in page.rows)

    assert found(sku="sku-a") == ["PO/7/A/3", "RCV-1/1"]
    assert found(lot="RCV-1") == ["RCV-1/1", "RCV-1/2"]
    assert found(lot="RCV-1/2") == ["RCV-1/2"]
    assert found(lot="PO/7/A/3") == ["PO/7/A/3"]
    assert found(supplier="SUP_") == ["PO/7/A/3"]  # an underscore is a character, not a wildcard
    day = RECEIVED.date()
    assert found(received_from=day, received_to=day) == ["RCV-1/1", "RCV-1/2"]
    assert found(received_to=day - timedelta(days=1)) == ["PO/7/A/3", "RCV-2/1"]
    assert found(category="apparel", sku="SKU-A", received_from=date(2026, 11, 1)) == ["PO/7/A/3", "RCV-1/1"]


def test_the_drivers_are_worded_one_way():
    from cx_pipeline.quality.returns import _drivers
    from cx_pipeline.quality.wording import percent_change

    lift = pd.DataFrame({"apparel.sizing": np.log([3.1, 1.07, 1.0]), "apparel.colour_match": np.log([1.42, 1.0, 1.2])})
    assert _drivers(lift) == [["sizing +210 %", "colour match +42 %"], ["sizing +7.0 %"], ["colour match +20 %"]]
    assert [percent_change(p) for p in (170.4, 7.25, -3)] == ["+170 %", "+7.2 %", "-3.0 %"]


def test_a_first_row_longer_than_the_header_is_a_problem_not_an_index(store):
    text = "\n".join([HEADER, rows()[0] + ",9,9", *rows()[1:]]) + "\n"
    assert problems_of(store, text) == ["row 2 has more fields than the header"]
    assert problems_of(store, "\n".join([HEADER, *rows(), rows()[0] + ",9,9"]) + "\n")[0].startswith("not a CSV file")
