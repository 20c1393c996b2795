"""The shop's state as the plan knows it: read by the shop's change log each run, whole on its own cadence, and a
full read says what the change log had missed."""

from pathlib import Path

import duckdb

from cx_pipeline.assets.resources import StorefrontResource
from cx_pipeline.simulator import Simulator
from tests.helpers import TOKEN, materializations


def storefront(sim: Simulator, every_hours: float) -> StorefrontResource:
    return StorefrontResource(url=sim.url, token=TOKEN, backoff_seconds=0.05, full_read_every_hours=every_hours)


def known(warehouse_path: Path) -> dict[str, tuple[str, int]]:
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
    assert known(warehouse_path) == shown(sim)


def test_the_full_read_reports_and_repairs_what_the_change_log_missed(sim, run_all, warehouse_path):
    assert run_all(storefront=storefront(sim, 24)).success
    edited = sorted(sim.world.storefront)[:2]
    with sim.world.lock:  # someone changed the shop by hand and its change log never said so
        for sku in edited:
            sim.world.storefront[sku] = {**sim.world.storefront[sku], "quantity": 999, "status": "in_stock"}

    unseen = run_all(storefront=storefront(sim, 24))  # by change: the edit is invisible
    assert materializations(unseen)["storefront_push_plan"]["shop_read"] == "changes"
    assert all(known(warehouse_path)[sku][1] != 999 for sku in edited)

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
    before = known(warehouse_path)
    # every read of the shop in that run comes back empty: the adapter's check, the change log, the full read
    sim.faults.add("/storefront/stock", "empty", times=3)

    stopped = run_all(storefront=storefront(sim, 0))

    assert not stopped.success
    assert "storefront_push_plan" not in materializations(stopped)
    assert known(warehouse_path) == before
