"""Binds the library, the assets and the checks into one Dagster code location (see workspace.yaml)."""

import dagster as dg

from assets.housekeeping import alerts_from_env, cx_housekeeping_daily, cx_housekeeping_job, run_failure_alert
from assets.ingest import raw_assets
from assets.quality import quality_assets
from assets.receiving import receiving_assets
from assets.resources import resources_from_env
from assets.review import review_assets
from assets.schedules import every_three_hours, pipeline_job
from assets.sensors import new_receipts_sensor
from assets.storefront import storefront_assets, storefront_checks
from checks.contracts import contract_checks
from checks.quality import quality_checks
from checks.review import review_checks

defs = dg.Definitions(
    assets=[*raw_assets, *receiving_assets, *storefront_assets, *review_assets, *quality_assets],
    asset_checks=[*contract_checks, *storefront_checks, *review_checks, *quality_checks],
    jobs=[pipeline_job, cx_housekeeping_job],
    schedules=[every_three_hours, cx_housekeeping_daily],
    sensors=[new_receipts_sensor, run_failure_alert],
    resources={**resources_from_env(), "alerts": alerts_from_env()},
    # One process writes the DuckDB file at a time: DuckDB allows a single read-write process per file.
    executor=dg.in_process_executor,
)
