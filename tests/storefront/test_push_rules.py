"""The push's rules that hold for every adapter: a write counts only when customers see it, the flip share is
measured against the catalog SKUs the shop lists, stock is split over warehouses, a dead shop stops the push."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from cx_pipeline.ingest.http import ApiClient
from cx_pipeline.storefront import push
from cx_pipeline.storefront.adapters import StockUpdate, WriteResult
from cx_pipeline.storefront.adapters.rest import RestStorefront
from cx_pipeline.warehouse import connect
from tests.helpers import WORLD_NOW


def test_a_write_the_shop_accepted_counts_only_when_customers_see_what_was_pushed():
    pushed = [StockUpdate("A", "out_of_stock", 0, "in_stock", 4), StockUpdate("B", "in_stock", 3, "out_of_stock", 0),
              StockUpdate("C", "in_stock", 5, "out_of_stock", 0)]  # fmt: skip
    answers = push.answer_rows(
        pushed,
        {
            "A": WriteResult("A", True, "ok", "in_stock", 4),  # still on sale: another location, untracked...
            "B": WriteResult("B", True, "ok", "in_stock", 3),
            "C": WriteResult("C", True, "ok", "in_stock", 2),  # fewer for sale than pushed
        },
        None,
    ).set_index("sku")

    assert answers["state"].to_dict() == {"A": "mismatch", "B": "ok", "C": "mismatch"}
    assert not answers.loc["A", "ok"]
    assert answers.loc["A", "response"].startswith(
        "the shop accepted the write but shows customers in_stock with 4 for sale, not out_of_stock with 0"
    )


@pytest.fixture
def con(tmp_path):
    with connect(tmp_path / "w.duckdb") as con:
        con.execute("""CREATE OR REPLACE TABLE stock_position AS SELECT * FROM (VALUES
            ('SKU-1', 'in_stock', 5, false), ('SKU-2', 'in_stock', 5, false), ('SKU-3', 'out_of_stock', 0, false),
            ('SKU-4', 'in_stock', 4, false)) t(sku, publish_status, publish_quantity, held)""")
        con.execute("""CREATE OR REPLACE TABLE stock_by_warehouse AS SELECT * FROM (VALUES
            ('SKU-1', 'WH-EAST', 4), ('SKU-1', 'WH-WEST', 3), ('SKU-2', 'WH-EAST', 9), ('SKU-2', 'WH-WEST', -2),
            ('SKU-4', 'WH-EAST', 2), ('SKU-4', 'WH-WEST', 2)) t(sku, warehouse, available)""")
        yield con


def plan(con, current: pd.DataFrame) -> dict:
    con.register("shop", current)  # the shop's state as the plan reads it: a table or view
    return push.plan(con, "shop", plan_id="p1", adapter="rest", max_flip_share=0.2, force=False, now=WORLD_NOW)


def test_the_flip_share_counts_only_catalog_skus_the_shop_lists_and_unlisted_ones_are_named(con):
    # the shop lists two catalog SKUs (one to flip) and twenty SKUs the catalog does not have
    current = pd.DataFrame(
        [("SKU-1", "out_of_stock", 0), ("SKU-2", "in_stock", 5)] + [(f"OTHER-{i}", "in_stock", 1) for i in range(20)],
        columns=["sku", "status", "quantity"],
    )
    row = plan(con, current)

    assert (row["catalog_size"], row["to_out_of_stock"] + row["back_in_stock"]) == (2, 1)
    assert row["flip_share"] == 0.5  # of the 2 listed catalog SKUs, not of the 22 the shop lists
    assert row["not_listed"] == 2 and push.unlisted(con, "shop") == ["SKU-3", "SKU-4"]


def test_the_pushed_quantity_is_split_over_the_warehouses_that_hold_it(con):
    current = pd.DataFrame(
        [("SKU-1", "out_of_stock", 0), ("SKU-2", "out_of_stock", 0), ("SKU-4", "in_stock", 1)],
        columns=["sku", "status", "quantity"],
    )
    plan(con, current)

    assert push.split_by_warehouse(con, "p1") == {
        "SKU-1": {"WH-EAST": 3, "WH-WEST": 2},  # 5 of 7 sellable: shares add up to what is pushed
        "SKU-2": {"WH-EAST": 5, "WH-WEST": 0},  # a warehouse short of its orders holds nothing for sale
        "SKU-4": {"WH-EAST": 2, "WH-WEST": 2},
    }


class AnswersNothing(BaseHTTPRequestHandler):
    """A shop that lists stock but answers every write with no result for any SKU (its backend is down)."""

    writes = 0

    def do_GET(self) -> None:
        self.reply({"data": [], "next_cursor": None})

    def do_POST(self) -> None:
        type(self).writes += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        self.reply({"results": []})

    def reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def dead_shop() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), AnswersNothing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_shop_that_answers_no_batch_stops_the_push_after_a_few(con, dead_shop):
    con.execute("INSERT INTO stock_position SELECT 'SKU-' || i, 'in_stock', 5, false FROM range(5, 9) t(i)")
    current = pd.DataFrame([(f"SKU-{i}", "out_of_stock", 0) for i in (1, 2, 4, 5, 6, 7, 8)],
                           columns=["sku", "status", "quantity"])  # fmt: skip
    assert plan(con, current)["changes"] == 7
    shop = RestStorefront(ApiClient(dead_shop, "t", name="storefront"), batch_size=1)

    report = push.execute(con, shop, "p1", lambda: WORLD_NOW)

    assert AnswersNothing.writes == push.MAX_UNANSWERED_BATCHES == 3  # not 7 batches of waiting for nothing
    assert report.failed == 3 and report.pushed == 0
    assert con.execute("SELECT status FROM push_plans").fetchall() == [("partly_pushed",)]
