"""The WMS as a file drop: CSV exports of the demo world's receipts, purchase orders and on-hand, pulled through
the real Dagster assets and contracts, loaded once each, malformed files rejected whole, half-written ones left."""

import csv
import json
import os
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from cx_pipeline.assets.resources import FileDropResource, WmsResource, WmsSources, source_from_env
from cx_pipeline.assets.sensors import new_receipts_sensor, wms_file_drop_sensor
from cx_pipeline.ingest.feeds import FEEDS, Feed
from cx_pipeline.ingest.http import ApiClient
from cx_pipeline.ingest.landing import flatten, land
from cx_pipeline.ingest.sources.files import LOADED, REJECTED, SUPERSEDED, pull_files, scan
from cx_pipeline.simulator import Simulator
from cx_pipeline.warehouse import connect
from tests.helpers import TOKEN, WORLD_NOW, check_results, materializations, nodes, resources

WMS = ("receipts", "purchase_orders", "on_hand")
EXPORTED = WORLD_NOW.timestamp()  # every export's modification time is pinned to the world's clock
SETTLE = 60.0


def export(sim: Simulator, feed: Feed) -> list[dict[str, str]]:
    """The feed as the WMS's CSV export holds it: one row per line, every field as text, empty for none."""
    client = ApiClient(sim.url, TOKEN)
    records = [r for page in client.pages(feed.path, {"limit": 1000}) for r in flatten(feed, page["data"])]
    return [{c: "" if r.get(c) is None else str(r[c]) for c in feed.columns} for r in records]


def write(folder: Path, name: str, feed: Feed, rows: list[dict[str, str]], at: float = EXPORTED) -> Path:
    """Write an export with the feed's columns as header, modified at `at` (epoch seconds)."""
    path = folder / name
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(feed.columns))
        writer.writeheader()
        writer.writerows(rows)
    os.utime(path, (at, at))
    return path


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    folder = tmp_path / "drop"
    folder.mkdir()
    return folder


@pytest.fixture
def exports(sim: Simulator) -> dict[str, list[dict[str, str]]]:
    return {name: export(sim, FEEDS[name]) for name in WMS}


def run(sim: Simulator, warehouse_path: Path, drop: Path, instance: dg.DagsterInstance | None = None):
    """Materialize the ingest room with the WMS read from the drop folder (the other systems from the simulator)."""
    return dg.materialize(
        nodes("ingest"),
        resources={**resources(sim, warehouse_path), "wms": FileDropResource(folder=str(drop), settle_seconds=SETTLE)},
        instance=instance,
        raise_on_error=False,
    )


def ledger(warehouse_path: Path) -> list[tuple]:
    with connect(warehouse_path, read_only=True) as con:
        query = "SELECT file_name, status, rows_read FROM ingest_files ORDER BY seen_at, file_name"
        return con.execute(query).fetchall()


def test_exports_land_once_pass_their_contracts_and_a_new_file_brings_only_its_rows(sim, warehouse_path, drop, exports):
    for name in WMS:
        write(drop, f"{name}_001.csv", FEEDS[name], exports[name])

    first = run(sim, warehouse_path, drop)

    assert first.success
    checks, landed = check_results(first), materializations(first)
    for name in WMS:
        assert checks[f"raw_{name}"].passed, checks[f"raw_{name}"].description
        assert landed[f"raw_{name}"]["rows_new"] == len(exports[name]) > 0
    assert sorted(ledger(warehouse_path)) == sorted((f"{n}_001.csv", LOADED, len(exports[n])) for n in WMS)

    # No new file: nothing is read again; the on-hand snapshot stands (staged again, nothing gone).
    again = run(sim, warehouse_path, drop)
    landed = materializations(again)
    assert again.success
    assert landed["raw_receipts"]["rows_fetched"] == landed["raw_purchase_orders"]["rows_fetched"] == 0
    assert (landed["raw_on_hand"]["rows_new"], landed["raw_on_hand"]["rows_updated"]) == (0, 0)
    assert all(check.passed for check in check_results(again).values())
    assert len(ledger(warehouse_path)) == 3

    # A new receipts export with three changed lines, and a new stock snapshot with two changed figures.
    changed = [dict(r) for r in exports["receipts"] if r["qty_received"] not in ("", "0") and not r["damage_reason"]]
    changed = changed[:3]
    for row in changed:
        row |= {"qty_damaged": "1", "damage_reason": "crushed", "updated_at": f"{WORLD_NOW:%Y-%m-%dT%H:%M:%SZ}"}
    write(drop, "receipts_002.csv", FEEDS["receipts"], changed, at=EXPORTED + 3600)
    stock = [dict(r) for r in exports["on_hand"]]
    for row in stock[:2]:
        row["on_hand"] = str(int(row["on_hand"]) + 5)
    write(drop, "on_hand_002.csv", FEEDS["on_hand"], stock, at=EXPORTED + 3600)

    third = run(sim, warehouse_path, drop)

    landed = materializations(third)
    assert third.success
    receipts, on_hand = landed["raw_receipts"], landed["raw_on_hand"]
    assert (receipts["rows_fetched"], receipts["rows_new"], receipts["rows_updated"]) == (3, 0, 3)
    assert (on_hand["rows_new"], on_hand["rows_updated"], on_hand["rows_unchanged"]) == (0, 2, len(stock) - 2)
    assert all(check_results(third)[f"raw_{n}"].passed for n in WMS)
    with connect(warehouse_path, read_only=True) as con:
        damaged = con.execute(
            "SELECT count(*) FROM valid_receipts WHERE damage_reason = 'crushed' AND receipt_id || '|' || line_no IN "
            "(SELECT unnest(?::VARCHAR[]))",
            [[f"{r['receipt_id']}|{r['line_no']}" for r in changed]],
        ).fetchone()
    assert damaged == (3,)


def test_a_malformed_file_is_rejected_whole_naming_its_lines_and_not_retried(sim, warehouse_path, drop, exports):
    for name in WMS:
        write(drop, f"{name}_001.csv", FEEDS[name], exports[name])
    assert run(sim, warehouse_path, drop).success
    lines = (drop / "receipts_001.csv").read_text(encoding="utf-8").splitlines()
    # line 3 lost a field, line 5 has a stray quote; the other lines are fine, and still nothing of the file lands
    broken = [lines[0], lines[1], lines[2].rsplit(",", 1)[0], lines[3], lines[4].replace(",", ',"x"y,', 1), lines[5]]
    path = drop / "receipts_002.csv"
    path.write_text("\n".join(broken) + "\n", encoding="utf-8")
    os.utime(path, (EXPORTED + 3600, EXPORTED + 3600))
    instance = dg.DagsterInstance.ephemeral()

    result = run(sim, warehouse_path, drop, instance)

    assert result.success
    assert materializations(result)["raw_receipts"]["rows_fetched"] == 0
    rejected = [r for r in ledger(warehouse_path) if r[0] == "receipts_002.csv"]
    assert rejected == [("receipts_002.csv", REJECTED, None)]
    errors = [e.user_message for e in instance.all_logs(result.run_id) if e.level == 40]  # logging.ERROR
    said = [m for m in errors if "receipts_002.csv" in m]
    assert said and "rejected whole" in said[0] and "line 3" in said[0] and "line 5" in said[0], errors
    assert "line 4" not in said[0]

    # Not retried while it stays as it is; once corrected (new content), it is a new file and loads.
    again = run(sim, warehouse_path, drop, instance)
    assert not [e for e in instance.all_logs(again.run_id) if e.level == 40 and "receipts_002.csv" in e.user_message]
    write(drop, "receipts_002.csv", FEEDS["receipts"], exports["receipts"][:4], at=EXPORTED + 7200)
    fixed = run(sim, warehouse_path, drop)
    assert materializations(fixed)["raw_receipts"]["rows_fetched"] == 4
    assert [r[1] for r in ledger(warehouse_path) if r[0] == "receipts_002.csv"] == [REJECTED, LOADED]


def test_bad_rows_of_a_good_file_are_quarantined_as_they_were_in_the_file(sim, warehouse_path, drop, exports):
    receipts = [dict(r) for r in exports["receipts"]]
    receipts[0]["qty_received"] = "12.5"
    receipts[1]["damage_reason"] = "dropped by a forklift"
    for name, rows in {**exports, "receipts": receipts}.items():
        write(drop, f"{name}_001.csv", FEEDS[name], rows)

    result = run(sim, warehouse_path, drop)

    check = check_results(result)["raw_receipts"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN  # the bad rows hold only themselves
    with connect(warehouse_path, read_only=True) as con:
        held = con.execute("SELECT DISTINCT row_data FROM quarantine WHERE feed = 'receipts' ORDER BY 1").fetchall()
    # each field as the file wrote it (an empty field is no value)
    as_in_the_file = [{c: v or None for c, v in row.items()} for row in receipts[:2]]
    assert sorted((json.loads(row) for (row,) in held), key=str) == sorted(as_in_the_file, key=str)


def write_parquet(folder: Path, name: str, feed: Feed, rows: list[dict[str, str]], at: float = EXPORTED) -> Path:
    """A Parquet export of `rows`, typed as a WMS would write it (numbers as numbers, times with their zone)."""
    path = folder / name
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        texts = pd.DataFrame(rows, columns=list(feed.columns)).replace("", None)
        con.register("texts", texts)
        typed = ", ".join(
            f'TRY_CAST("{c}" AS {t.replace("JSON", "VARCHAR")}) AS "{c}"' for c, t in feed.columns.items()
        )
        con.execute(f"COPY (SELECT {typed} FROM texts) TO '{path}' (FORMAT parquet)")
    os.utime(path, (at, at))
    return path


def test_parquet_exports_land_like_csv_and_a_workbook_is_rejected_saying_what_to_do(sim, warehouse_path, drop, exports):
    for name in WMS:
        write_parquet(drop, f"{name}_001.parquet", FEEDS[name], exports[name])
    (drop / "receipts_002.xlsx").write_bytes(b"PK\x03\x04 a workbook")
    os.utime(drop / "receipts_002.xlsx", (EXPORTED, EXPORTED))
    instance = dg.DagsterInstance.ephemeral()

    result = run(sim, warehouse_path, drop, instance)

    assert result.success
    checks, landed = check_results(result), materializations(result)
    for name in WMS:
        assert checks[f"raw_{name}"].passed, checks[f"raw_{name}"].description
        assert landed[f"raw_{name}"]["rows_new"] == len(exports[name]) > 0
    assert ("receipts_002.xlsx", REJECTED, None) in ledger(warehouse_path)
    errors = [e.user_message for e in instance.all_logs(result.run_id) if e.level == 40]  # logging.ERROR
    assert any("receipts_002.xlsx" in m and "save the sheet as CSV UTF-8" in m for m in errors), errors
    with connect(warehouse_path, read_only=True) as con:  # the same rows as the CSV path lands
        received = con.execute("SELECT min(received_at), sum(qty_received) FROM valid_receipts").fetchone()
    rows = [r for r in exports["receipts"] if r["qty_received"]]
    assert received[1] == sum(int(r["qty_received"]) for r in rows)


def test_a_parquet_file_without_the_feeds_columns_is_rejected_whole(tmp_path, drop, exports):
    feed = FEEDS["receipts"]
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT 'R-1' AS receipt_id, 1 AS line_no) TO '{drop / 'receipts_001.parquet'}' (FORMAT parquet)"
        )
    (drop / "receipts_002.parquet").write_bytes(b"PAR1 not really")
    for name in ("receipts_001.parquet", "receipts_002.parquet"):
        os.utime(drop / name, (EXPORTED, EXPORTED))
    with connect(tmp_path / "w.duckdb") as con:
        read = pull_files(con, feed, drop, "receipts*.parquet", None, EXPORTED + SETTLE, SETTLE)
    assert read.batch.rows == 0 and not read.loaded and len(read.rejected) == 2
    assert "lacks the column(s) po_id" in read.rejected[0] and "not a readable Parquet file" in read.rejected[1]


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"receipt_id,line_no\nR-1,1\n", "line 1: the header lacks the column(s) po_id"),
        (b"", "line 1: no header row"),
        (None, "line 2: invalid encoding"),
    ],
)
def test_a_file_that_is_no_export_is_rejected_before_anything_lands(tmp_path, drop, content, said):
    feed = FEEDS["receipts"]
    if content is None:  # a Latin-1 export: not UTF-8
        header = ",".join(feed.columns).encode()
        content = header + b"\nR-1,1,PO-1,1,SKU-\xe9,WH-EAST,1,0,,2026-11-16T05:00:00Z,2026-11-16T05:00:00Z\n"
    (drop / "receipts_001.csv").write_bytes(content)
    os.utime(drop / "receipts_001.csv", (EXPORTED, EXPORTED))
    with connect(tmp_path / "w.duckdb") as con:
        read = pull_files(con, feed, drop, "receipts*.csv", None, EXPORTED + SETTLE, SETTLE)
        assert read.batch.rows == 0 and not read.loaded
        assert len(read.rejected) == 1 and said in read.rejected[0].lower(), read.rejected


def test_a_file_still_being_written_is_not_read_until_it_settles(tmp_path, drop, exports):
    feed = FEEDS["receipts"]
    rows = exports["receipts"]
    now = EXPORTED + 3600  # the clock the pull is told, pinned
    # a writer that writes in place: half the rows so far, the last change 5 s ago
    write(drop, "receipts_001.csv", feed, rows[: len(rows) // 2], at=now - 5)
    write(drop, ".receipts_002.csv", feed, rows, at=now - 3600)  # a hidden file, and a temporary name: never read
    write(drop, "receipts_003.csv.part", feed, rows, at=now - 3600)
    with connect(tmp_path / "w.duckdb") as con:
        early = pull_files(con, feed, drop, "receipts*", None, now, SETTLE)
        land(con, early.batch)

        assert early.batch.rows == 0 and not early.loaded
        assert any("receipts_001.csv: still being written" in note for note in early.notes)

        write(drop, "receipts_001.csv", feed, rows, at=now - 5)  # finished, and then left alone for the window
        settled = pull_files(con, feed, drop, "receipts*", None, now + SETTLE, SETTLE)
        land(con, settled.batch)

        assert settled.loaded == ["receipts_001.csv"] and settled.batch.rows == len(rows)
        assert [f.name for f in scan(drop, "receipts*", now + SETTLE, SETTLE).settled] == ["receipts_001.csv"]
        # loaded once: the same file is not read again
        assert pull_files(con, feed, drop, "receipts*", None, now + 2 * SETTLE, SETTLE).loaded == []


def test_of_several_new_snapshots_the_newest_is_loaded_and_the_older_superseded(tmp_path, drop, exports):
    feed = FEEDS["on_hand"]
    stock = exports["on_hand"]
    older = [dict(r) | {"on_hand": "0"} for r in stock]
    write(drop, "on_hand_001.csv", feed, older, at=EXPORTED)
    write(drop, "on_hand_002.csv", feed, stock, at=EXPORTED + 60)
    with connect(tmp_path / "w.duckdb") as con:
        read = pull_files(con, feed, drop, "on_hand*.csv", None, EXPORTED + 3600, SETTLE)
        land(con, read.batch)

        assert read.loaded == ["on_hand_002.csv"] and read.batch.rows == len(stock)
        statuses = con.execute("SELECT file_name, status FROM ingest_files ORDER BY file_name").fetchall()
        assert statuses == [("on_hand_001.csv", SUPERSEDED), ("on_hand_002.csv", LOADED)]
        assert read.batch.as_of == WORLD_NOW + timedelta(seconds=60)


def test_the_sensor_asks_for_one_run_per_new_settled_file(drop, exports):
    wms = FileDropResource(folder=str(drop), settle_seconds=SETTLE)
    instance = dg.DagsterInstance.ephemeral()

    def tick(cursor: str | None, source: object = wms) -> dg.SensorResult | dg.SkipReason:
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"wms": source}) as context:
            return wms_file_drop_sensor(context)

    empty = tick(None)
    assert not empty.run_requests and "no new export file" in empty.skip_reason.skip_message
    write(drop, "receipts_001.csv", FEEDS["receipts"], exports["receipts"])
    first = tick(empty.cursor)
    assert len(first.run_requests) == 1
    quiet = tick(first.cursor)
    assert not quiet.run_requests and quiet.skip_reason
    write(drop, "receipts_002.csv", FEEDS["receipts"], exports["receipts"][:3])
    with_new = tick(quiet.cursor)
    assert len(with_new.run_requests) == 1
    assert with_new.run_requests[0].run_key != first.run_requests[0].run_key
    # one still being written (modified just now, inside a settle window of an hour) starts nothing yet
    (drop / "on_hand_001.csv").write_text("sku,warehouse,on_hand,in_qc,damaged\n", encoding="utf-8")
    waiting = tick(with_new.cursor, FileDropResource(folder=str(drop), settle_seconds=3600))
    assert not waiting.run_requests and "still being written: on_hand_001.csv" in waiting.skip_reason.skip_message


def test_each_sensor_skips_saying_why_when_the_wms_is_not_its_source(drop):
    instance = dg.DagsterInstance.ephemeral()
    files = FileDropResource(folder=str(drop))
    api = WmsResource(base_url="http://127.0.0.1:9", token=TOKEN)
    with dg.build_sensor_context(instance=instance, resources={"wms": files}) as context:
        assert "not the WMS API" in new_receipts_sensor(context).skip_message
    with dg.build_sensor_context(instance=instance, resources={"wms": api}) as context:
        assert "no WMS feed comes from a file drop" in wms_file_drop_sensor(context).skip_message


def test_cx_wms_source_files_reads_the_drop_folder_from_the_environment(monkeypatch, drop):
    monkeypatch.setenv("CX_WMS_SOURCE", "files")
    monkeypatch.setenv("CX_WMS_DROP_DIR", str(drop))
    monkeypatch.setenv("CX_WMS_SETTLE_SECONDS", "120")

    source = source_from_env("wms")

    assert isinstance(source, FileDropResource) and source.settle_seconds == 120
    assert (
        source.pattern(FEEDS["receipts"])
        == "receipts*.csv;receipts*.parquet;receipts*.xlsx;receipts*.xls;receipts*.xlsm;receipts*.ods"
    )


def test_each_wms_feed_may_come_from_its_own_source(sim, warehouse_path, drop, exports, monkeypatch):
    """Receipts and purchase orders as the WMS's export files, on-hand stock from its API: one source per feed."""
    for name in ("receipts", "purchase_orders"):
        write(drop, f"{name}_001.csv", FEEDS[name], exports[name])
    write(drop, "on_hand_001.csv", FEEDS["on_hand"], exports["on_hand"][:5])  # not its source: never read
    files = FileDropResource(folder=str(drop), settle_seconds=SETTLE)
    api = resources(sim, warehouse_path)["wms"]
    wms = WmsSources(receipts=files, purchase_orders=files, on_hand=api)

    result = dg.materialize(
        nodes("ingest"), resources={**resources(sim, warehouse_path), "wms": wms}, raise_on_error=False
    )

    assert result.success
    landed = materializations(result)
    assert landed["raw_on_hand"]["rows_new"] == len(sim.world.on_hand()) > 5
    with connect(warehouse_path, read_only=True) as con:
        sources = dict(con.execute("SELECT feed, source FROM ingest_batches WHERE feed IN (?, ?, ?)", WMS).fetchall())
    assert sources == {"receipts": "files", "purchase_orders": "files", "on_hand": "rest"}
    assert sorted(name for name, *_ in ledger(warehouse_path)) == ["purchase_orders_001.csv", "receipts_001.csv"]
    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, resources={"wms": wms}) as context:
        assert "receipts' source is FileDropResource" in new_receipts_sensor(context).skip_message
    with dg.build_sensor_context(instance=instance, resources={"wms": wms}) as context:
        ticked = wms_file_drop_sensor(context)  # watches the files of the feeds it serves only
    assert len(ticked.run_requests) == 1 and "on_hand_001.csv" not in ticked.cursor

    monkeypatch.setenv("CX_WMS_SOURCE", "rest")
    for name in ("RECEIPTS", "PURCHASE_ORDERS"):
        monkeypatch.setenv(f"CX_{name}_SOURCE", "files")
        monkeypatch.setenv(f"CX_{name}_DROP_DIR", str(drop))
    from_env = source_from_env("wms")
    assert isinstance(from_env, WmsSources) and isinstance(from_env.on_hand, WmsResource)
    assert isinstance(from_env.receipts, FileDropResource) and from_env.receipts.folder == "CX_RECEIPTS_DROP_DIR"
    monkeypatch.setenv("CX_ON_HAND_SOURCE", "vendure")
    with pytest.raises(ValueError, match=r"CX_ON_HAND_SOURCE='vendure' is refused: the stock truth comes from"):
        source_from_env("wms")
