"""The Dagster code location: every room's definitions merged, with the resources read from the environment.

Each room's assets (`assets/<room>.py`) and checks (`checks/<room>.py`) end with their own `defs`; adding an
asset touches its room only. Tests take their asset lists from `ROOMS`, never from a copy.
"""

import dagster as dg

from cx_pipeline.assets import housekeeping, schedules, sensors
from cx_pipeline.assets import ingest as ingest_assets
from cx_pipeline.assets import kpis as kpis_assets
from cx_pipeline.assets import quality as quality_assets
from cx_pipeline.assets import receiving as receiving_assets
from cx_pipeline.assets import review as review_assets
from cx_pipeline.assets import storefront as storefront_assets
from cx_pipeline.assets.resources import resources_from_env
from cx_pipeline.checks import ingest as ingest_checks
from cx_pipeline.checks import quality as quality_checks
from cx_pipeline.checks import review as review_checks
from cx_pipeline.checks import storefront as storefront_checks

# The capabilities, upstream first: each room's assets with its checks.
ROOMS: dict[str, dg.Definitions] = {
    "ingest": dg.Definitions.merge(ingest_assets.defs, ingest_checks.defs),
    "receiving": receiving_assets.defs,
    "storefront": dg.Definitions.merge(storefront_assets.defs, storefront_checks.defs),
    "review": dg.Definitions.merge(review_assets.defs, review_checks.defs),
    "quality": dg.Definitions.merge(quality_assets.defs, quality_checks.defs),
    "kpis": kpis_assets.defs,
}


def build_defs() -> dg.Definitions:
    """Every room's definitions, the schedules and sensors, and the resources as the environment sets them now."""
    return dg.Definitions.merge(
        *ROOMS.values(),
        schedules.defs,
        sensors.defs,
        housekeeping.defs,
        dg.Definitions(
            resources={**resources_from_env(), "alerts": housekeeping.alerts_from_env()},
            # One process writes the DuckDB file at a time: DuckDB allows a single read-write process per file.
            executor=dg.in_process_executor,
        ),
    )


defs = build_defs()
