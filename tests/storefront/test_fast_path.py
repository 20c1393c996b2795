"""The storefront's fast path: a sensor on the stock and order changes starts a small job that pushes what flipped."""

import dagster as dg
import duckdb
import pytest

from cx_pipeline.assets import schedules
from cx_pipeline.assets.resources import FileDropResource, OmsResource, WmsResource
from cx_pipeline.assets.schedules import FAST_PATH_ASSETS, WAREHOUSE_TAG, fast_path_job
from cx_pipeline.assets.sensors import stock_changes_sensor
from cx_pipeline.definitions import ROOMS, defs
from tests.helpers import TOKEN, nodes, resources

SOLD = "SKU-000229"


def after_a_full_run() -> dg.DagsterInstance:
    """An instance in which a full run has materialized the stock position (the fast path's precondition)."""
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(dg.AssetMaterialization("stock_position"))
    return instance


def tick(instance: dg.DagsterInstance, cursor: str | None, wms: object, oms: object) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"wms": wms, "oms": oms}) as context:
        return stock_changes_sensor(context)


def fast_path(**resources: object) -> dg.JobDefinition:
    """The fast-path job as deployed, with `resources`."""
    merged = dg.Definitions.merge(*ROOMS.values(), schedules.defs, dg.Definitions(resources=resources))
    return merged.resolve_job_def(fast_path_job.name)


def apis(url: str) -> tuple[WmsResource, OmsResource]:
    return WmsResource(base_url=url, token=TOKEN), OmsResource(base_url=url, token=TOKEN)


def test_the_sensor_asks_each_source_for_one_changed_row_and_wakes_only_on_a_change(sim):
    instance = after_a_full_run()
    wms, oms = apis(sim.url)

    first = tick(instance, None, wms, oms)  # nothing seen yet: everything is a change
    assert len(first.run_requests) == 1 and first.run_requests[0].tags["cx/trigger"] == "stock_changes"
    quiet = tick(instance, first.cursor, wms, oms)
    assert isinstance(quiet, dg.SkipReason) and "no changes" in quiet.skip_message
    asked = sim.requests["/wms/on_hand"], sim.requests["/oms/orders"]

    sim.advance(2)
    woke = tick(instance, first.cursor, wms, oms)

    assert (sim.requests["/wms/on_hand"], sim.requests["/oms/orders"]) == (asked[0] + 1, asked[1] + 1)
    assert len(woke.run_requests) == 1 and woke.run_requests[0].run_key != first.run_requests[0].run_key
    assert woke.cursor != first.cursor


def test_the_sensor_waits_for_the_first_full_run_and_while_a_run_writes_the_warehouse(sim, warehouse_path):
    first_load = tick(dg.DagsterInstance.ephemeral(), None, *apis(sim.url))
    assert isinstance(first_load, dg.SkipReason) and "after the first full run" in first_load.skip_message
    instance = after_a_full_run()
    wms, oms = apis(sim.url)
    run = instance.create_run_for_job(
        fast_path(**resources(sim, warehouse_path)), tags={WAREHOUSE_TAG: "write"}
    )  # queued, not started

    waiting = tick(instance, None, wms, oms)

    assert isinstance(waiting, dg.SkipReason) and run.run_id in waiting.skip_message
    assert sim.requests["/wms/on_hand"] == 0  # the cursor stays put: nothing asked, nothing missed


def test_the_sensor_says_which_sources_it_cannot_ask(sim, tmp_path):
    instance = after_a_full_run()
    files = FileDropResource(folder=str(tmp_path))
    _, oms = apis(sim.url)

    neither = tick(instance, None, files, files)
    assert isinstance(neither, dg.SkipReason)
    assert "on_hand (FileDropResource)" in neither.skip_message and "3-hourly run" in neither.skip_message
    orders_only = tick(instance, None, files, oms)  # the order source alone still wakes the fast path
    assert len(orders_only.run_requests) == 1 and "on_hand" not in orders_only.cursor


def test_the_fast_path_job_is_the_stock_and_push_assets_with_their_checks():
    job = defs.resolve_job_def(fast_path_job.name)  # as deployed

    assert sorted(job.graph.node_names()) == sorted(
        [
            *FAST_PATH_ASSETS,
            "raw_on_hand_data_contract",
            "raw_open_orders_data_contract",
            "storefront_push_plan_flip_share_within_limit",
            "storefront_push_plan_inputs_passed_contracts",
        ]
    )
    assert job.tags[WAREHOUSE_TAG] == "write"  # queued behind a full run, never beside it


@pytest.mark.slow
def test_a_sale_is_shown_on_the_storefront_by_the_fast_path(sim, warehouse_path, tmp_path):
    # The small world sells SKU-000229 from 11 units to 9 in its first six hours. Its last 10 units are display
    # stock (a per-SKU floor), so that sale sells it out.
    overrides = tmp_path / "overrides.csv"
    overrides.write_text("sku,safety_buffer,floor,note\nSKU-000229,,10,display stock\n")
    config = {"stock_position": {"overrides_csv": str(overrides)}}
    run_config = {"ops": {name: {"config": c} for name, c in config.items()}}
    instance = dg.DagsterInstance.ephemeral()
    full = dg.materialize(nodes(), resources=resources(sim, warehouse_path), run_config=run_config, instance=instance)
    assert full.success and sim.world.storefront[SOLD]["status"] == "in_stock"
    wms, oms = apis(sim.url)
    settled = tick(instance, None, wms, oms).cursor
    sim.advance(6)  # a morning of sales at the source, hours before the next 3-hourly run
    woke = tick(instance, settled, wms, oms)
    assert len(woke.run_requests) == 1

    result = fast_path(**resources(sim, warehouse_path)).execute_in_process(
        instance=instance,
        tags=woke.run_requests[0].tags,
        run_config=run_config,
    )

    assert result.success
    steps = {event.step_key for event in result.all_events if event.event_type_value == "STEP_SUCCESS"}
    assert "delay_notices" not in steps and "stale_products" not in steps and "storefront_status_push" in steps
    assert sim.world.storefront[SOLD]["status"] == "out_of_stock" and sim.world.storefront[SOLD]["quantity"] == 0
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        pushed = con.execute(
            "SELECT sku, change, status, quantity FROM push_changes WHERE plan_id = ?", [result.run_id]
        ).fetchall()
        position = con.execute("SELECT sku, publish_status, publish_quantity FROM stock_position").fetchall()
    assert (SOLD, "to_out_of_stock", "out_of_stock", 0) in pushed
    assert len(pushed) > 1  # the other SKUs sold that morning: their quantities
    shown = sim.world.storefront
    assert all((shown[sku]["status"], shown[sku]["quantity"]) == (status, qty) for sku, status, qty in position)
