"""Asset metadata for people: a table preview in markdown."""

import dagster as dg
import pandas as pd

PREVIEW_ROWS = 20


def markdown(frame: pd.DataFrame, empty: str = "none") -> dg.MetadataValue:
    return dg.MetadataValue.md(empty if frame.empty else frame.head(PREVIEW_ROWS).to_markdown(index=False))
