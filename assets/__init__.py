"""The orchestration layer: thin Dagster assets over the cx_pipeline library, with their schedules."""
