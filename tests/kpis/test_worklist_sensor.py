"""A pipeline run that fails never reaches the work list's step: worklist_after_failed_run publishes the list in
a run of its own (cx_worklist_job), once per failed run."""

import dagster as dg

from cx_pipeline.assets.kpis import worklist_after_failed_run
from cx_pipeline.assets.schedules import WAREHOUSE_TAG
from cx_pipeline.definitions import defs


@dg.asset
def breaks() -> None:
    raise RuntimeError("a refused notice")


def failure_context(instance: dg.DagsterInstance) -> dg.RunFailureSensorContext:
    failed = dg.materialize([breaks], instance=instance, raise_on_error=False)
    run = instance.get_run_by_id(failed.run_id)
    event = next(e for e in instance.all_logs(failed.run_id) if e.dagster_event and e.dagster_event.is_run_failure)
    return dg.build_run_status_sensor_context(
        sensor_name=worklist_after_failed_run.name,
        dagster_instance=instance,
        dagster_run=run,
        dagster_event=event.dagster_event,
    ).for_run_failure()


def test_a_failed_pipeline_run_starts_one_run_that_publishes_the_work_list():
    with dg.instance_for_test() as instance:
        context = failure_context(instance)
        request = worklist_after_failed_run(context)

    assert request.run_key == f"worklist-after-{context.dagster_run.run_id}"  # one per failed run, on every tick
    job = defs.resolve_job_def("cx_worklist_job")
    assert {k.path[-1] for k in job.asset_layer.executable_asset_keys} == {"operator_worklist"}
    assert job.tags[WAREHOUSE_TAG] == "write"  # queued behind a run that holds the warehouse
    sensor = defs.resolve_sensor_def("worklist_after_failed_run")
    assert sensor.job_name == "cx_worklist_job" and sensor.default_status == dg.DefaultSensorStatus.RUNNING
