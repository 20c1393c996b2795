"""The review web app for merchandisers (and, with the inspections, QA staff)."""

from cx_pipeline.web.app import create_app

__all__ = ["create_app"]
