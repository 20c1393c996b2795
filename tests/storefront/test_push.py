"""The storefront push: only real changes, batched, audited, guarded, and finished by a re-run after faults."""

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from cx_pipeline.assets.resources import StorefrontResource
from cx_pipeline.simulator import Simulator, build_world
from cx_pipeline.storefront import push
from cx_pipeline.storefront.stock import OverridesError, read_overrides
from tests.helpers import TOKEN, WORLD_NOW, check_results, materializations

BATCH = "/storefront/stock/batch"


def query(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def shown(sim) -> dict[str, tuple[str, int]]:
    return {sku: (s["status"], s["quantity"]) for sku, s in sim.world.storefront.items()}


def test_the_storefront_ends_up_showing_the_stock_position_and_a_steady_state_writes_nothing(
    sim, run_all, warehouse_path
):
    first = run_all()
    assert first.success
    plan = materializations(first)["storefront_push_plan"]
    assert plan["to_out_of_stock"] > 0 and plan["back_in_stock"] > 0
    rows = query(warehouse_path, "SELECT sku, publish_status, publish_quantity FROM stock_position")
    desired = {sku: (status, qty) for sku, status, qty in rows}
    assert shown(sim) == desired
    batches = sim.requests[BATCH]
    assert batches == -(-plan["changes"] // 100)  # ceil(changes / batch size)
    audit = query(
        warehouse_path,
        "SELECT count(*), count(DISTINCT sku), bool_and(ok), count(before_status), count(after_status) FROM push_audit",
    )[0]
    assert audit == (plan["changes"], plan["changes"], True, plan["changes"], plan["changes"])

    again = run_all()
    assert materializations(again)["storefront_push_plan"]["changes"] == 0
    assert sim.requests[BATCH] == batches  # nothing changed, nothing written


def test_too_many_flips_stop_the_push_until_an_operator_forces_it(sim, run_all, warehouse_path):
    before = shown(sim)
    blocked = run_all(config={"storefront_push_plan": {"max_flip_share": 0.05}})
    check = next(e for e in blocked.get_asset_check_evaluations() if e.check_name == "flip_share_within_limit")
    assert not check.passed and "force: true" in check.description
    assert "storefront_status_push" not in materializations(blocked)
    assert sim.requests[BATCH] == 0 and shown(sim) == before
    report = query(warehouse_path, "SELECT count(*) FROM push_changes")[0][0]
    assert report > 0  # the dry-run diff is there to review

    forced = run_all(config={"storefront_push_plan": {"max_flip_share": 0.05, "force": True}})
    assert forced.success and materializations(forced)["storefront_status_push"]["pushed"] > 0


def test_nothing_is_pushed_from_inputs_that_broke_their_contract_structurally(sim, run_all):
    # 30 of the 600 stock rows (5 %): above max_bad_row_share, so not a few held SKUs but a broken feed
    sim.faults.add("/wms/on_hand", "corrupt", field="on_hand", value=-3, rows=30)
    result = run_all()
    assert not check_results(result)["raw_on_hand"].passed
    assert "storefront_status_push" not in materializations(result)
    assert sim.requests[BATCH] == 0


def test_a_half_failed_batch_is_audited_and_a_rerun_finishes_it_without_duplicates(sim, run_all, warehouse_path):
    sim.faults.add(BATCH, "partial", times=1)
    failed = run_all()
    assert not failed.success
    refused = query(warehouse_path, "SELECT count(*) FROM push_audit WHERE NOT ok")[0][0]
    assert refused > 0
    assert query(warehouse_path, "SELECT DISTINCT state FROM push_audit WHERE NOT ok") == [("refused",)]
    assert query(warehouse_path, "SELECT status FROM push_plans") == [("partly_pushed",)]

    finished = run_all()
    assert finished.success
    assert materializations(finished)["storefront_status_push"]["pushed"] == refused
    per_sku = query(warehouse_path, "SELECT max(n) FROM (SELECT count(*) AS n FROM push_audit WHERE ok GROUP BY sku)")
    assert per_sku == [(1,)]
    assert materializations(run_all())["storefront_push_plan"]["changes"] == 0


@pytest.mark.parametrize(
    ("kind", "params"),
    [("error", {"status": 503}), ("throttle", {"retry_after": 1}), ("drop", {}), ("latency", {"seconds": 1.5})],
)
def test_a_failed_or_timed_out_batch_is_retried_and_applied_once(sim, run_all, warehouse_path, kind, params):
    sim.faults.add(BATCH, kind, times=1, **params)
    # latency beyond the read timeout: the shop applies the batch, the answer is lost, the retry is replayed
    storefront = StorefrontResource(url=sim.url, token=TOKEN, backoff_seconds=0.05, read_timeout_seconds=0.5)
    result = run_all(storefront=storefront)
    assert result.success
    changes = materializations(result)["storefront_push_plan"]["changes"]
    assert sim.requests[BATCH] == -(-changes // 100) + 1
    audited = query(warehouse_path, "SELECT count(*), count(DISTINCT sku) FROM push_audit WHERE ok")
    assert audited == [(changes, changes)]
    assert materializations(run_all())["storefront_push_plan"]["changes"] == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"token": "wrong-token"}, "token was rejected"),
        ({"url": "http://127.0.0.1:9"}, "not usable"),
        ({"adapter": "magento"}, "unknown"),
    ],
)
def test_a_misconfigured_adapter_fails_at_start_before_any_write(sim, run_all, settings, message):
    config = {"url": sim.url, "token": TOKEN, "retries": 0, **settings}
    result = run_all(storefront=StorefrontResource(**config))
    assert not result.success
    failure = next(e for e in result.all_events if e.is_failure)
    text = str(failure.event_specific_data.error)
    assert message in text and "wrong-token" not in text
    assert sim.requests[BATCH] == 0


@pytest.fixture
def empty_shop() -> Iterator[Simulator]:
    """A second simulator whose storefront lists no SKUs at all (the WMS and catalog stay on `sim`)."""
    world = build_world(seed=7, n_skus=10, now=WORLD_NOW)
    world.storefront.clear()
    with Simulator(world=world, token=TOKEN) as shop:
        yield shop


def test_a_storefront_that_lists_nothing_stops_the_plan_unless_it_is_a_new_empty_shop(run_all, empty_shop):
    storefront = StorefrontResource(url=empty_shop.url, token=TOKEN, backoff_seconds=0.05)
    stopped = run_all(storefront=storefront)
    assert not stopped.success
    failure = next(e for e in stopped.all_events if e.is_failure and e.step_key == "storefront_push_plan")
    text = failure.event_specific_data.user_failure_data.description
    assert f"the rest storefront at {empty_shop.url} listed no SKUs at all" in text
    assert "empty_shop_ok: true" in text and TOKEN not in text
    assert not {"storefront_push_plan", "storefront_status_push"} & set(materializations(stopped))

    new_shop = run_all(config={"storefront_push_plan": {"empty_shop_ok": True}}, storefront=storefront)
    assert new_shop.success
    plan = materializations(new_shop)["storefront_push_plan"]
    assert plan["empty_shop"] and (plan["catalog_size"], plan["changes"]) == (0, 0) and plan["not_listed"] > 0
    assert empty_shop.requests[BATCH] == 0


def test_the_empty_read_message_names_the_adapter_and_the_shop_but_no_credentials():
    nothing = pd.DataFrame(columns=["sku", "status", "quantity"])
    url = "https://admin:s3cret@shop.example.com:3000/admin-api?token=s3cret"
    with pytest.raises(push.EmptyStorefrontError) as error:
        push.check_not_empty(nothing, "vendure", url, empty_shop_ok=False)
    text = str(error.value)
    assert "the vendure storefront at https://shop.example.com:3000/admin-api listed no SKUs at all" in text
    assert "s3cret" not in text and "admin:" not in text
    push.check_not_empty(nothing, "vendure", url, empty_shop_ok=True)  # a new shop: no error


def test_dry_run_plans_and_reports_but_writes_nothing(sim, run_all):
    result = run_all(config={"storefront_status_push": {"dry_run": True}})
    meta = materializations(result)["storefront_status_push"]
    assert meta["dry_run"] and meta["would_change"] > 0
    assert sim.requests[BATCH] == 0


def test_per_sku_overrides_change_what_is_published(sim, run_all, warehouse_path, tmp_path):
    assert run_all().success
    sku, available = query(
        warehouse_path,
        "SELECT sku, available FROM stock_position WHERE publish_status = 'in_stock' ORDER BY sku LIMIT 1",
    )[0]
    overrides = tmp_path / "overrides.csv"
    overrides.write_text(f"sku,safety_buffer,floor,note\n{sku},,{available},hold back for a promotion\n")
    result = run_all(config={"stock_position": {"overrides_csv": str(overrides)}})
    assert result.success
    assert sim.world.storefront[sku]["status"] == "out_of_stock"


def test_a_bad_overrides_file_is_rejected_with_every_offending_line(tmp_path):
    bad = tmp_path / "overrides.csv"
    bad.write_text("sku,floor,colour\nSKU-1,2,red\nSKU-404,-1,\nSKU-1,x,\n")
    with pytest.raises(OverridesError) as error:
        read_overrides(bad, {"SKU-1"})
    text = str(error.value)
    for fragment in (
        "unknown column 'colour'",
        "line 3: sku 'SKU-404'",
        "line 3: floor",
        "line 4: floor",
        "'SKU-1' appears more than once",
    ):
        assert fragment in text
