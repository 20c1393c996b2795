"""What steps log about their own progress and time."""

from cx_pipeline.assets.metadata import Progress, timed


def test_progress_is_logged_first_then_at_most_every_interval_and_last():
    logged: list[str] = []
    progress = Progress(logged.append, seconds=3600)  # an interval no test run reaches

    for done in range(1, 101):
        progress(f"{done}/100", last=done == 100)

    assert logged == ["1/100", "100/100"]


def test_timed_adds_up_each_parts_seconds():
    seconds: dict[str, float] = {}
    for _ in range(2):
        with timed(seconds, "part"):
            pass

    assert list(seconds) == ["part"] and seconds["part"] >= 0
