"""Inspection entries in the app store: the checklist, the Z1.4 sample and verdict, entry validation, and the
CSV import that reports every bad row and stores nothing unless the whole file is good."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from cx_pipeline import warehouse
from cx_pipeline.core import appstore
from cx_pipeline.core.rule_files import RulesError
from cx_pipeline.quality import inspections
from cx_pipeline.quality.checklists import load_checklists
from cx_pipeline.quality.inspections import Entry, InspectionError

CHECKLISTS = load_checklists()
APPAREL = CHECKLISTS.items("apparel")  # stitching, sizing, colour_match, labelling, packaging
# The app's clock, pinned late in the evening: an entry a few hours after receipt falls on the next day in UTC
# (the suite once failed every evening because it read the wall clock here).
NOW = datetime(2026, 11, 18, 23, 30, tzinfo=UTC)
RECEIVED = NOW - timedelta(days=2)


@pytest.fixture
def store(tmp_path: Path):
    with appstore.connect(tmp_path / "app.sqlite") as s:
        lots = pd.DataFrame(
            [
                ("RCV-1", 1, "SKU-A", "Slim Jeans", "apparel", "SUP-01", "WH-EAST", 1000, RECEIVED),
                ("RCV-1", 2, "SKU-B", "Smart Speaker", "electronics", "SUP-02", "WH-EAST", 40, RECEIVED),
                ("RCV-2", 1, "SKU-C", "Classic Hoodie", "apparel", "SUP-01", "WH-WEST", 12, RECEIVED),
            ],
            columns=list(inspections.Lot.__dataclass_fields__),
        )
        inspections.publish_lots(s, [inspections.lot_tuples(lots)], NOW)
        yield s


def apparel_entry(**defects: tuple[int, int, int]) -> Entry:
    counts = {(item, s): 0 for item in APPAREL for s in ("critical", "major", "minor")}
    for item, (critical, major, minor) in defects.items():
        counts |= {(item, "critical"): critical, (item, "major"): major, (item, "minor"): minor}
    return Entry("RCV-1", 1, counts)


def stored(store) -> int:
    return store.execute("SELECT count(*) FROM inspections").fetchone()[0]


def test_the_bundled_checklists_cover_every_demo_category_and_use_the_default_aqls():
    assert set(CHECKLISTS.categories) == {"apparel", "electronics", "home", "beauty", "toys", "sports"}
    assert CHECKLISTS.aql == {"critical": 0.0, "major": 2.5, "minor": 4.0}
    assert APPAREL == ["stitching", "sizing", "colour_match", "labelling", "packaging"]


def test_a_form_entry_gets_its_sample_size_and_verdict(store):
    lot = inspections.lot(store, "RCV-1", 1)
    assert inspections.plan_for(lot, CHECKLISTS).sample_size == 80  # 1,000 units: code letter J
    accepted = apparel_entry(sizing=(0, 3, 4), stitching=(0, 2, 3))  # major 5 <= Ac 5, minor 7 <= Ac 7
    assert inspections.verdict(lot, accepted, CHECKLISTS)["lot"] == "accept"
    inspection_id = inspections.record(store, accepted, CHECKLISTS, "quinn", now=NOW)

    header, defects = inspections.inspection(store, inspection_id)
    assert (header["sample_size"], header["verdict"], header["inspector"], header["source"]) == (
        80,
        "accept",
        "quinn",
        "form",
    )
    assert len(defects) == len(APPAREL) * 3
    rejected = apparel_entry(sizing=(0, 6, 0))
    assert inspections.verdict(lot, rejected, CHECKLISTS) == {
        "critical": "accept", "major": "reject", "minor": "accept", "lot": "reject"
    }  # fmt: skip


def test_an_entry_is_checked_whole_and_nothing_is_stored_when_it_is_wrong(store):
    entry = apparel_entry()
    del entry.defects[("packaging", "minor")]
    del entry.defects[("labelling", "major")]
    entry.defects[("power_on", "major")] = 1
    entry.defects[("sizing", "major")] = 81  # more than the 80 units sampled
    entry.inspected_at = NOW + timedelta(days=1)

    with pytest.raises(InspectionError) as error:
        inspections.record(store, entry, CHECKLISTS, "quinn", now=NOW)

    assert error.value.problems == [
        "not on the apparel checklist: power_on",
        "counts missing: labelling major, packaging minor",
        "sizing major: 81 defects, more than the 80 units sampled",
        f"inspected_at {appstore.iso(entry.inspected_at)} is in the future",
    ]
    assert stored(store) == 0
    with pytest.raises(InspectionError, match="not a received lot QA can inspect"):
        inspections.record(store, Entry("RCV-9", 1, apparel_entry().defects), CHECKLISTS, "quinn", now=NOW)


def csv_rows(*rows: str, header: str = "receipt_id,line_no,item,critical,major,minor,inspected_at,note") -> str:
    return "\n".join([header, *rows]) + "\n"


def apparel_rows(receipt: str = "RCV-1", line: int = 1, major_sizing: str = "0") -> list[str]:
    return [f"{receipt},{line},{item},0,{major_sizing if item == 'sizing' else 0},0,," for item in APPAREL]


def test_a_good_csv_is_imported_whole(store):
    inspected = RECEIVED + timedelta(hours=3)  # the next day in UTC: the day must come from the row, not the clock
    electronics = [f"RCV-1,2,{item},0,1,0,{inspected:%Y-%m-%dT%H:%M:%SZ},checked"
                   for item in CHECKLISTS.items("electronics")]  # fmt: skip
    text = csv_rows(*apparel_rows(major_sizing="2"), *electronics)
    imported = inspections.import_csv(store, text, CHECKLISTS, "q", now=NOW)
    assert imported == 2 and stored(store) == 2
    rows = {r["receipt_id"] + "/" + str(r["line_no"]): r for r in inspections.recent(store)}
    assert (rows["RCV-1/1"]["major"], rows["RCV-1/1"]["verdict"], rows["RCV-1/1"]["source"]) == (2, "accept", "csv")
    # 40 units (D): the major plan moves down to E, 13 units, Ac 1: four major defects reject the lot
    assert (rows["RCV-1/2"]["sample_size"], rows["RCV-1/2"]["major"], rows["RCV-1/2"]["verdict"]) == (13, 4, "reject")
    assert rows["RCV-1/2"]["note"] == "checked"
    assert rows["RCV-1/2"]["inspected_at"] == f"{inspected:%Y-%m-%dT%H:%M:%S}+00:00"


def test_every_bad_row_is_reported_with_its_number_and_nothing_is_imported(store):
    good = apparel_rows()  # rows 2-6
    text = csv_rows(
        *good,
        "RCV-9,1,sizing,0,0,0,,",  # row 7: no such lot
        "RCV-1,2,stitching,0,0,0,,",  # row 8: not an electronics item, and the lot lacks its own items
        "RCV-2,1,sizing,0,x,0,,",  # row 9: not a number
        "RCV-2,1,sizing,0,0,0,,",  # row 10: the same lot and item again
        "RCV-2,1,stitching,0,9,0,,",  # row 11: 9 defects in a 5-unit sample
        "RCV-2,1,labelling,-1,0,0,,",  # row 12: negative
        "RCV-2,1,colour_match,0,0,0,2099-01-01T00:00:00Z,",  # row 13: in the future
        "RCV-2,1,packaging,0,0,0,yesterday,",  # row 14: not a time
    )
    with pytest.raises(InspectionError) as error:
        inspections.import_csv(store, text, CHECKLISTS, "q", now=NOW)
    problems = error.value.problems
    assert "lot RCV-9/1 is not a received lot QA can inspect: row 7" in problems
    assert "item stitching is not on the electronics checklist: row 8" in problems
    assert "lot RCV-1/2 has no row for power_on, accessories, cosmetic, packaging: row 8" in problems
    assert "major is not a whole number >= 0: row 9" in problems
    assert "the same lot and item again: row 10" in problems
    assert "more major defects than units sampled: row 11" in problems
    assert "critical is not a whole number >= 0: row 12" in problems
    assert "inspected_at is in the future: row 13" in problems
    assert "inspected_at is not an ISO 8601 time: row 14" in problems
    first_rows = [int(p.split(": row")[-1].split()[-1].split(",")[0].split("-")[0]) for p in problems]
    assert first_rows == sorted(first_rows)  # in the order of their first row
    assert not any(p.endswith((": row 2", ": row 3", ": row 4")) for p in problems)  # the good rows pass
    assert stored(store) == 0  # not even the good lot


def test_a_file_with_the_wrong_columns_is_refused_before_its_rows(store):
    with pytest.raises(InspectionError) as error:
        inspections.import_csv(
            store, csv_rows("RCV-1,1,sizing,0", header="receipt_id,line,item,critical"), CHECKLISTS, "q", now=NOW
        )
    assert error.value.problems == [
        "missing column 'line_no'", "missing column 'major'", "missing column 'minor'",
        "unknown column 'line' (allowed: receipt_id, line_no, item, critical, major, minor, inspected_at, note)",
    ]  # fmt: skip
    with pytest.raises(InspectionError, match="no rows"):
        inspections.import_csv(store, csv_rows(), CHECKLISTS, "q", now=NOW)


def test_a_later_entry_for_the_same_lot_replaces_the_earlier_one_in_the_lot_list(store):
    first = inspections.record(store, apparel_entry(), CHECKLISTS, "quinn", now=NOW)
    inspections.record(store, apparel_entry(sizing=(1, 0, 0)), CHECKLISTS, "quinn", now=NOW, amends=first,
                       amend_reason="recounted")  # fmt: skip
    pending, everything = (
        inspections.lots_page(store),
        inspections.lots_page(store, inspections.LotSearch(pending_only=False)),
    )
    total_pending, total = pending.total, everything.total
    pending, everything = pending.rows, everything.rows
    assert total_pending == 2 and ("RCV-1", 1) not in {(r["receipt_id"], r["line_no"]) for r in pending}
    inspected = next(r for r in everything if (r["receipt_id"], r["line_no"]) == ("RCV-1", 1))
    assert inspected["verdict"] == "reject" and total == 3


def test_a_full_publication_replaces_the_list_whole_and_one_that_stops_half_way_changes_nothing(store):
    def lots_now() -> list[tuple[str, int]]:
        return [tuple(r) for r in store.execute("SELECT receipt_id, line_no FROM inspection_lots ORDER BY 1, 2")]

    def chunks(*keys: tuple[str, int], fail: bool = False):
        for receipt_id, line_no in keys:
            yield [(receipt_id, line_no, "SKU-D", "Mug", "home", "SUP-03", "WH-EAST", 24, appstore.iso(RECEIVED))]
        if fail:
            raise ConnectionError("the warehouse went away")

    with pytest.raises(ConnectionError):
        inspections.publish_lots(store, chunks(("RCV-9", 1), fail=True), NOW, replace=True)
    assert lots_now() == [("RCV-1", 1), ("RCV-1", 2), ("RCV-2", 1)]  # the app kept the list it had

    published = inspections.publish_lots(store, chunks(("RCV-3", 1), ("RCV-3", 2)), NOW, replace=True)
    assert published == 2 and lots_now() == [("RCV-3", 1), ("RCV-3", 2)]
    tables = {r[0] for r in store.execute("SELECT name FROM sqlite_master WHERE tbl_name LIKE 'inspection_lots%'")}
    assert "inspection_lots_next" not in tables and "inspection_lots_by_time" in tables  # the index came along
    assert inspections.lot(store, "RCV-3", 2).title == "Mug"


def test_a_broken_checklists_file_is_reported_whole(tmp_path):
    path = tmp_path / "checklists.yaml"
    path.write_text(
        "aql: {critical: 0, major: 3.0, minor: 4.0}\n"
        "categories:\n  apparel: {Stitching: seams, sizing: ''}\n  toys: []\n"
    )
    with pytest.raises(RulesError) as error:
        load_checklists(path)
    message = str(error.value)
    assert "aql: major 3.0 is not a Z1.4 AQL" in message
    assert "apparel.Stitching: an item name is lower-case letters" in message
    assert "apparel.sizing: describe what good looks like" in message
    assert "toys: expected a mapping of item -> what good looks like" in message


def land_product(con, sku: str, title: str, price: float) -> None:
    con.execute("DELETE FROM raw_catalog WHERE sku = ?", [sku])  # a new version, landed now
    con.execute(
        "INSERT INTO raw_catalog VALUES (?, ?, 'home', 'SUP-01', ?, 'EUR', 'active', ?, ?, NULL, 'b', now())",
        [sku, title, price, RECEIVED - timedelta(days=900), RECEIVED],
    )


def land_receipt(con, receipt_id: str, sku: str, received: datetime = RECEIVED) -> None:
    con.execute(
        "INSERT INTO raw_receipts VALUES (?, 1, 'PO-1', 1, ?, 'WH-EAST', 24, 0, NULL, ?, ?, 'b', now())",
        [receipt_id, sku, received, received],
    )


def offered(store) -> list[str]:
    return [r[0] for r in store.execute("SELECT receipt_id FROM inspection_lots ORDER BY receipt_id")]


def inspect(store, receipt_id: str, when: datetime) -> None:
    """QA's result for a home lot, entered at `when`."""
    counts = {(item, s): 0 for item in CHECKLISTS.items("home") for s in ("critical", "major", "minor")}
    inspections.record(store, Entry(receipt_id, 1, counts, when), CHECKLISTS, "quinn", now=when)


WINDOW = inspections.LotWindow(pending_days=7, inspected_days=30)


def test_a_run_sends_new_lots_and_the_lots_of_relabelled_products_not_those_of_repriced_ones(tmp_path):
    def publish(con, store) -> list[tuple[str, str]]:
        chunks, through = inspections.lots_to_publish(
            con, NOW, WINDOW, inspections.recently_inspected(store, NOW, WINDOW),
            inspections.lots_published_through(store),
        )  # fmt: skip
        lots = [lot for chunk in chunks for lot in chunk]
        inspections.publish_lots(store, [lots], NOW, WINDOW, through=through)
        inspections.lots_published(con, WINDOW)
        return sorted((lot[0], lot[3]) for lot in lots)

    with warehouse.connect(tmp_path / "w.duckdb") as con, appstore.connect(tmp_path / "app.sqlite") as store:
        land_product(con, "SKU-A", "Mug", 4.5)
        land_product(con, "SKU-B", "Bowl", 6.0)
        land_receipt(con, "RCV-1", "SKU-A")
        land_receipt(con, "RCV-2", "SKU-B")
        assert publish(con, store) == [("RCV-1", "Mug"), ("RCV-2", "Bowl")]
        assert publish(con, store) == []  # nothing changed

        land_product(con, "SKU-A", "Mug", 3.9)  # a new price: its lot shows the same
        land_product(con, "SKU-B", "Soup bowl", 6.0)  # a new title: its lot must show it
        land_receipt(con, "RCV-3", "SKU-A")
        assert publish(con, store) == [("RCV-2", "Soup bowl"), ("RCV-3", "Mug")]

        con.execute(  # SKU-B fails its contract: out of valid_catalog, and its lot with it
            "INSERT INTO quarantine VALUES ('catalog', 'b', 'expect_not_null', 'SKU-B', '{}', now(), NULL)"
        )
        land_receipt(con, "RCV-4", "SKU-B")
        assert publish(con, store) == []
        con.execute("UPDATE quarantine SET released_at = now()")  # its next version is good again, unchanged
        assert publish(con, store) == [("RCV-2", "Soup bowl"), ("RCV-4", "Soup bowl")]


def test_a_publication_by_change_ends_with_the_list_a_whole_publication_gives(tmp_path):
    def listed(store) -> list[tuple]:
        return [tuple(r) for r in store.execute("SELECT * FROM inspection_lots ORDER BY receipt_id, line_no")]

    with warehouse.connect(tmp_path / "w.duckdb") as con, appstore.connect(tmp_path / "app.sqlite") as store:
        land_product(con, "SKU-A", "Mug", 4.5)
        land_product(con, "SKU-B", "Bowl", 6.0)
        for n, (sku, days) in enumerate([("SKU-A", 1), ("SKU-B", 3), ("SKU-A", 6), ("SKU-B", 20)], start=1):
            land_receipt(con, f"RCV-{n}", sku, NOW - timedelta(days=days))
        assert inspections.refresh_lots(con, store, NOW, WINDOW) == 3
        inspect(store, "RCV-3", NOW)

        later = NOW + timedelta(days=2)  # RCV-3 left the receipts' window, but was inspected: it stays
        land_product(con, "SKU-B", "Soup bowl", 6.0)  # relabelled: its lots are sent again
        land_product(con, "SKU-A", "Mug", 3.9)  # repriced: nothing to send
        land_receipt(con, "RCV-5", "SKU-A", later)
        assert inspections.refresh_lots(con, store, later, WINDOW) == 2  # RCV-2 (relabelled) and RCV-5
        by_change = listed(store)

        store.execute("DELETE FROM publications WHERE name = 'inspection_lots'")  # forget it: publish it whole
        assert inspections.refresh_lots(con, store, later, WINDOW) == 4
        assert listed(store) == by_change
        assert [lot[:4] for lot in by_change] == [
            ("RCV-1", 1, "SKU-A", "Mug"),
            ("RCV-2", 1, "SKU-B", "Soup bowl"),
            ("RCV-3", 1, "SKU-A", "Mug"),
            ("RCV-5", 1, "SKU-A", "Mug"),
        ]


def test_qa_is_offered_the_lots_received_within_the_window_not_inspected_yet_and_those_inspected_recently(tmp_path):
    with warehouse.connect(tmp_path / "w.duckdb") as con, appstore.connect(tmp_path / "app.sqlite") as store:
        land_product(con, "SKU-A", "Mug", 4.5)
        received = {"RCV-1": 2, "RCV-2": 8, "RCV-3": 20, "RCV-4": 45, "RCV-5": 3}  # days before NOW
        for receipt_id, days in received.items():
            land_receipt(con, receipt_id, "SKU-A", NOW - timedelta(days=days))
        # results entered while the lots were offered (a one-off list of every lot, as the demo loads its history)
        lots = pd.DataFrame(
            [(r, 1, "SKU-A", "Mug", "home", "SUP-01", "WH", 24, NOW - timedelta(days=d)) for r, d in received.items()],
            columns=list(inspections.Lot.__dataclass_fields__),
        )
        inspections.publish_lots(store, [inspections.lot_tuples(lots)], NOW, inspections.LotWindow(pending_days=60))
        for receipt_id, days in {"RCV-3": 10, "RCV-4": 40, "RCV-5": 1}.items():
            inspect(store, receipt_id, NOW - timedelta(days=days))

        assert inspections.refresh_lots(con, store, NOW, WINDOW) == 3  # a first publication: the list whole
        # pending (2 days), inspected 10 days ago, inspected yesterday; not the lot received 8 days ago and never
        # inspected, nor the one inspected 40 days ago
        assert offered(store) == ["RCV-1", "RCV-3", "RCV-5"]
        (rows,) = store.execute("SELECT rows FROM publications WHERE name = 'inspection_lots'").fetchone()
        assert rows == 3

        # inspected lots kept for less time than pending ones: a lot received within the window but inspected
        # before the shorter one leaves too; a changed window publishes the list whole again
        shorter = inspections.LotWindow(pending_days=30, inspected_days=5)
        assert inspections.refresh_lots(con, store, NOW, shorter) == 4
        assert offered(store) == ["RCV-1", "RCV-2", "RCV-5"]


def test_lots_leave_the_list_when_they_leave_the_window_or_their_inspection_ages_without_a_resend(tmp_path):
    with warehouse.connect(tmp_path / "w.duckdb") as con, appstore.connect(tmp_path / "app.sqlite") as store:
        land_product(con, "SKU-A", "Mug", 4.5)
        land_receipt(con, "RCV-1", "SKU-A", NOW - timedelta(days=2))
        land_receipt(con, "RCV-2", "SKU-A", NOW - timedelta(days=6))
        assert inspections.refresh_lots(con, store, NOW, WINDOW) == 2
        inspect(store, "RCV-2", NOW)

        later = NOW + timedelta(days=6)  # RCV-1 is 8 days old and nobody inspected it; RCV-2 was inspected 6 days ago
        land_receipt(con, "RCV-3", "SKU-A", later)
        assert inspections.refresh_lots(con, store, later, WINDOW) == 1  # only the new lot is sent
        assert offered(store) == ["RCV-2", "RCV-3"]

        month_later = NOW + timedelta(days=31)
        assert inspections.refresh_lots(con, store, month_later, WINDOW) == 0
        assert offered(store) == []

        # QA still holding a lot's page or a file after it left: a clear refusal, nothing stored
        with pytest.raises(InspectionError, match="RCV-1/1 is not a received lot QA can inspect: lots are offered"):
            inspect(store, "RCV-1", later)
        csv = csv_rows(*[f"RCV-1,1,{item},0,0,0,," for item in CHECKLISTS.items("home")])
        with pytest.raises(InspectionError) as error:
            inspections.import_csv(store, csv, CHECKLISTS, "quinn", now=later)
        rows = len(CHECKLISTS.items("home"))
        assert error.value.problems == [f"lot RCV-1/1 is not a received lot QA can inspect: rows 2-{rows + 1}"]
        assert stored(store) == 1


def test_the_contract_judges_the_latest_import_alone_against_the_receipts(tmp_path):
    with warehouse.connect(tmp_path / "w.duckdb") as con, appstore.connect(tmp_path / "app.sqlite") as store:
        land_product(con, "SKU-A", "Mug", 4.5)
        for receipt_id in ("RCV-1", "RCV-2", "RCV-3"):
            land_receipt(con, receipt_id, "SKU-A")
        inspections.refresh_lots(con, store, NOW, WINDOW)
        inspect(store, "RCV-1", NOW)
        assert inspections.import_inspections(store, con, "run-1", NOW) == 1
        inspect(store, "RCV-2", NOW)
        inspect(store, "RCV-3", NOW)
        assert inspections.import_inspections(store, con, "run-2", NOW + timedelta(hours=3)) == 2
        con.execute("DELETE FROM raw_receipts WHERE receipt_id = 'RCV-3'")  # its lot no longer on record

        frame = inspections.latest_import(con, CHECKLISTS)

        items = len(CHECKLISTS.items("home")) * 3
        assert sorted(frame["receipt_id"].unique()) == ["RCV-2", "RCV-3"]  # not the earlier import's RCV-1
        assert len(frame) == 2 * items and list(frame["_row"]) == list(range(1, 2 * items + 1))
        assert frame.groupby("receipt_id")["_known_lot"].all().to_dict() == {"RCV-2": True, "RCV-3": False}
        assert frame["_known_item"].all()

        assert inspections.import_inspections(store, con, "run-3", NOW + timedelta(hours=6)) == 0
        assert inspections.latest_import(con, CHECKLISTS).empty  # an import of nothing: nothing to judge


def test_lots_by_verdict_are_counted_again_when_the_inspections_change(tmp_path):
    with warehouse.connect(tmp_path / "w.duckdb") as con, appstore.connect(tmp_path / "app.sqlite") as store:
        land_product(con, "SKU-A", "Mug", 4.5)
        for receipt_id in ("RCV-1", "RCV-2"):
            land_receipt(con, receipt_id, "SKU-A")
        inspections.refresh_lots(con, store, NOW, WINDOW)

        def counts() -> dict[str, int]:
            frame = inspections.by_verdict(con)
            return dict(zip(frame["verdict"] + "/" + frame["source"], frame["lots"], strict=True))

        assert counts() == {}
        inspect(store, "RCV-1", NOW)
        inspections.import_inspections(store, con, "run-1", NOW)
        assert counts() == {"accept/form": 1}
        assert counts() == {"accept/form": 1}  # asked again, nothing new: the same

        counts_by_item = {(item, s): 0 for item in CHECKLISTS.items("home") for s in ("critical", "major", "minor")}
        counts_by_item[(CHECKLISTS.items("home")[0], "critical")] = 1
        amended = Entry("RCV-1", 1, counts_by_item, NOW + timedelta(hours=1))  # rejected now: counts once still
        inspections.record(
            store, amended, CHECKLISTS, "quinn", now=NOW + timedelta(hours=1), amends=1, amend_reason="missed a crack"
        )
        inspect(store, "RCV-2", NOW + timedelta(hours=1))
        inspections.import_inspections(store, con, "run-2", NOW + timedelta(hours=3))
        assert counts() == {"accept/form": 1, "reject/form": 1}
