"""The 3-hourly schedule runs the pipeline only when something is new, and its tick says what it found or asked."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from cx_pipeline.assets import schedules
from cx_pipeline.assets.resources import FileDropResource, StorefrontResource
from cx_pipeline.assets.schedules import every_three_hours, fast_path_job, pipeline_job
from cx_pipeline.core import appstore
from cx_pipeline.definitions import ROOMS
from cx_pipeline.ingest.feeds import FEEDS
from cx_pipeline.review import decisions
from tests.helpers import resources

pytestmark = pytest.mark.slow  # each test runs the whole pipeline once


def job(name: str, **resources: object) -> dg.JobDefinition:
    """The job `name` as deployed, with `resources`."""
    merged = dg.Definitions.merge(*ROOMS.values(), schedules.defs, dg.Definitions(resources=resources))
    return merged.resolve_job_def(name)


@pytest.fixture
def after_a_run(sim, warehouse_path):
    """An instance in which cx_pipeline_job ran once on the simulator; and the moment that run began."""
    # an instance with a reference (not an ephemeral one): a schedule's context reopens it when given resources
    with dg.instance_for_test() as instance:
        assert job(pipeline_job.name, **resources(sim, warehouse_path)).execute_in_process(instance=instance).success
        (record,) = instance.get_run_records(dg.RunsFilter(job_name=pipeline_job.name))
        yield instance, datetime.fromtimestamp(record.start_time, UTC)


def tick(instance: dg.DagsterInstance, at: datetime, sim, warehouse_path, **replaced: object):
    wanted = {"wms", "catalog", "oms", "helpdesk", "app_store"}
    chosen = {k: v for k, v in resources(sim, warehouse_path).items() if k in wanted} | replaced
    with dg.build_schedule_context(instance=instance, resources=chosen, scheduled_execution_time=at) as context:
        return every_three_hours(context)


def test_nothing_new_launches_no_run_and_the_tick_says_what_it_asked(after_a_run, sim, warehouse_path):
    instance, began = after_a_run
    asked = sum(sim.requests[feed.path] for feed in FEEDS.values())

    quiet = tick(instance, began + timedelta(minutes=5), sim, warehouse_path)

    assert isinstance(quiet, dg.SkipReason)
    assert quiet.skip_message.startswith("nothing new since the last run")
    assert all(f"{name} since " in quiet.skip_message for name in FEEDS)
    assert sum(sim.requests[feed.path] for feed in FEEDS.values()) - asked == len(FEEDS)  # one row each


def test_a_change_at_a_source_launches_the_run_and_names_the_change(after_a_run, sim, warehouse_path):
    instance, began = after_a_run
    sim.advance(3)

    woke = tick(instance, began + timedelta(minutes=5), sim, warehouse_path)

    assert isinstance(woke, dg.RunRequest) and woke.tags["cx/trigger"] == "schedule"
    assert "changed at the source" in woke.tags["cx/why"]


def test_what_people_entered_a_turned_day_and_the_fast_path_each_launch_the_run(after_a_run, sim, warehouse_path):
    instance, began = after_a_run
    soon = began + timedelta(minutes=5)

    turned = tick(instance, began + timedelta(days=1), sim, warehouse_path)
    assert isinstance(turned, dg.RunRequest) and "a day turned" in turned.tags["cx/why"]

    with appstore.connect(warehouse_path.with_name("app.sqlite")) as store:
        (sku,) = store.execute("SELECT sku FROM review_queue LIMIT 1").fetchone()
        decisions.record_for_skus(store, [sku], "keep", "", "merch")
    decided = tick(instance, soon, sim, warehouse_path)
    assert isinstance(decided, dg.RunRequest) and "review decisions entered" in decided.tags["cx/why"]
    with appstore.connect(warehouse_path.with_name("app.sqlite")) as store:
        store.execute("DELETE FROM review_decisions")

    fast = job(fast_path_job.name, **resources(sim, warehouse_path)).execute_in_process(instance=instance)
    assert fast.success
    after_fast = tick(instance, soon, sim, warehouse_path)
    assert isinstance(after_fast, dg.RunRequest) and "fast path landed" in after_fast.tags["cx/why"]


def test_a_source_it_cannot_ask_or_a_failed_run_launches_the_run(after_a_run, sim, warehouse_path, tmp_path):
    instance, began = after_a_run
    soon = began + timedelta(minutes=5)

    files = tick(instance, soon, sim, warehouse_path, wms=FileDropResource(folder=str(tmp_path)))
    assert isinstance(files, dg.RunRequest) and "FileDropResource" in files.tags["cx/why"]

    nothing_listening = StorefrontResource(url="http://127.0.0.1:9", token="t", retries=0, backoff_seconds=0.01)
    broken = resources(sim, warehouse_path) | {"storefront": nothing_listening}
    failed = job(pipeline_job.name, **broken)
    assert not failed.execute_in_process(instance=instance, raise_on_error=False).success
    retry = tick(instance, soon, sim, warehouse_path)
    assert isinstance(retry, dg.RunRequest) and "did not succeed (FAILURE)" in retry.tags["cx/why"]
