"""How QA's pages and the pipeline word a return-risk driver: one way everywhere (a light module, so the web
app need not load the model's libraries to format it)."""


def percent_change(percent: float) -> str:
    """A relative change of expected return inquiries: `+170 %`, `+7.5 %`, `-3.0 %` (never `x2.7`)."""
    return f"{percent:+.0f} %" if abs(percent) >= 10 else f"{percent:+.1f} %"
