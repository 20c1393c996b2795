"""The shop's state as the plan knows it: read by the shop's change log each run, whole on its own cadence, and a
full read says what the change log had missed."""

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from cx_pipeline import warehouse
from cx_pipeline.assets.resources import StorefrontResource
from cx_pipeline.ingest.http import UpstreamError
from cx_pipeline.simulator import Simulator
from cx_pipeline.storefront import shop_state
from cx_pipeline.storefront.adapters import ShopRead, StorefrontAdapter
from tests.helpers import TOKEN, materializations


def storefront(sim: Simulator, every_hours: float) -> StorefrontResource:
    return StorefrontResource(url=sim.url, token=TOKEN, backoff_seconds=0.05, full_read_every_hours=every_hours)


def state(warehouse_path: Path) -> dict[str, tuple[str, int]]:
    """The shop's state as the warehouse knows it (`shop_state`)."""
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        return {sku: (status, quantity) for sku, status, quantity in con.execute("FROM shop_state").fetchall()}


def shown(sim: Simulator) -> dict[str, tuple[str, int]]:
    return {sku: (s["status"], s["quantity"]) for sku, s in sim.world.storefront.items()}


def test_later_plans_read_only_what_changed_and_know_the_whole_shop(sim, run_all, warehouse_path):
    first = run_all(storefront=storefront(sim, 24))
    assert first.success
    plan = materializations(first)["storefront_push_plan"]
    assert plan["shop_read"] == "full" and plan["shop_rows_read"] == len(sim.world.storefront)
    pushed = materializations(first)["storefront_status_push"]["pushed"]
    assert pushed > 0

    sim.advance(6)
    second = run_all(storefront=storefront(sim, 24))

    plan = materializations(second)["storefront_push_plan"]
    assert plan["shop_read"] == "changes"
    assert plan["shop_rows_read"] == pushed  # the shop's change log lists our own writes, and nothing else moved
    steady = run_all(storefront=storefront(sim, 24))
    assert materializations(steady)["storefront_push_plan"]["changes"] == 0
    assert state(warehouse_path) == shown(sim)


def test_the_full_read_reports_and_repairs_what_the_change_log_missed(sim, run_all, warehouse_path):
    assert run_all(storefront=storefront(sim, 24)).success
    edited = sorted(sim.world.storefront)[:2]
    with sim.world.lock:  # someone changed the shop by hand and its change log never said so
        for sku in edited:
            sim.world.storefront[sku] = {**sim.world.storefront[sku], "quantity": 999, "status": "in_stock"}

    unseen = run_all(storefront=storefront(sim, 24))  # by change: the edit is invisible
    assert materializations(unseen)["storefront_push_plan"]["shop_read"] == "changes"
    assert all(state(warehouse_path)[sku][1] != 999 for sku in edited)

    full = run_all(storefront=storefront(sim, 0))
    plan = materializations(full)["storefront_push_plan"]
    assert plan["shop_read"] == "full"
    assert (plan["drift_changed"], plan["drift_new"], plan["drift_gone"]) == (2, 0, 0)
    assert plan["drift_skus"] == 2
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        planned = {sku for (sku,) in con.execute("SELECT sku FROM push_changes WHERE plan_id = ?", [full.run_id])
                   .fetchall()}  # fmt: skip
    assert set(edited) <= planned  # set back to what the stock says
    assert all(shown(sim)[sku][1] != 999 for sku in edited)


def test_an_empty_full_read_leaves_the_known_shop_as_it_was(sim, run_all, warehouse_path):
    assert run_all(storefront=storefront(sim, 24)).success
    before = state(warehouse_path)
    # every read of the shop in that run comes back empty: the adapter's check, the change log, the full read
    sim.faults.add("/storefront/stock", "empty", times=3)

    stopped = run_all(storefront=storefront(sim, 0))

    assert not stopped.success
    assert "storefront_push_plan" not in materializations(stopped)
    assert state(warehouse_path) == before


class FakeShop(StorefrontAdapter):
    """A shop held in memory with a change log, to drive `read_shop` through its cases."""

    name = "rest"

    def __init__(self, state: dict[str, tuple[str, int]], log_fails: bool = False) -> None:
        self.state, self.log_fails, self.clock = dict(state), log_fails, datetime(2026, 11, 16, 6, tzinfo=UTC)
        self.changed: list[str] = []

    def check(self) -> None: ...

    def read(self) -> pd.DataFrame:
        return self.frame(list(self.state))

    def read_all(self) -> ShopRead:
        return ShopRead(self.read(), self.clock)

    def read_changes(self, since: datetime) -> ShopRead:
        if self.log_fails:
            raise UpstreamError("GET /storefront/stock: 400 updated_since too old")
        return ShopRead(self.frame(self.changed), self.clock)

    def write(self, updates, key):
        raise NotImplementedError

    def frame(self, skus: list[str]) -> pd.DataFrame:
        return pd.DataFrame([(s, *self.state[s]) for s in skus], columns=["sku", "status", "quantity"])


def look(path: Path, shop: FakeShop, where: str, every_hours: float = 24) -> shop_state.KnownState:
    with warehouse.connect(path) as con:
        return shop_state.read_shop(con, shop, shop=where, plan_id="plan", every_hours=every_hours)


def test_a_switch_of_shop_reads_the_new_one_whole_and_never_mixes_their_states(warehouse_path):
    a, b = FakeShop({"A1": ("in_stock", 3)}), FakeShop({"B1": ("out_of_stock", 0)})
    look(warehouse_path, a, "http://a")
    look(warehouse_path, b, "http://b")

    back = look(warehouse_path, a, "http://a")  # the known state is b's now: a is read whole again

    assert back.full_read and back.listed == 1 and list(state(warehouse_path)) == ["A1"]


def test_a_change_log_that_fails_gives_way_to_a_full_read(warehouse_path):
    shop = FakeShop({"S1": ("in_stock", 3)})
    look(warehouse_path, shop, "http://shop")
    shop.log_fails, shop.state["S1"] = True, ("out_of_stock", 0)

    known = look(warehouse_path, shop, "http://shop")

    assert known.full_read and "could not be read" in known.note
    assert known.listed == 1 and state(warehouse_path) == {"S1": ("out_of_stock", 0)}


def test_a_refused_write_makes_the_next_plan_read_the_shop_whole(warehouse_path):
    shop = FakeShop({"S1": ("in_stock", 3), "S2": ("in_stock", 1)})
    look(warehouse_path, shop, "http://shop")
    with warehouse.connect(warehouse_path) as con:  # the shop no longer lists S2 and refused a write to it
        con.execute(
            "INSERT INTO push_audit (plan_id, batch_no, idempotency_key, sku, adapter, ok, response, pushed_at) "
            "VALUES ('p', 1, 'p-1', 'S2', 'rest', false, 'unknown sku', now())"
        )
    del shop.state["S2"]

    known = look(warehouse_path, shop, "http://shop")

    assert known.full_read and list(state(warehouse_path)) == ["S1"]


def test_a_sku_the_change_log_lists_twice_is_known_once_as_last_listed(warehouse_path):
    shop = FakeShop({"S1": ("in_stock", 3)})
    look(warehouse_path, shop, "http://shop")
    shop.state["S1"], shop.changed = ("out_of_stock", 0), ["S1", "S1"]

    known = look(warehouse_path, shop, "http://shop")

    assert not known.full_read and state(warehouse_path) == {"S1": ("out_of_stock", 0)}
