"""Whether the 3-hourly run has anything to do: what changed since the pipeline's last run, asked cheaply.

A run with nothing new would recompute everything from the same inputs. So the schedule asks first, in order of
cost: the run history (a failed or first run, a day turned, the fast path landed stock or orders the rest has not
seen), each feed's cursor and full-read cadence as its last materialization recorded them, the app store's newest
review decision and QA entry, and last each feed's source (one request for one row). The first reason found
launches the run and is written on it; with none, the tick is skipped and says what it asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from cx_pipeline.assets.resources import AppStoreResource, ChangeProbe, SourceResource
from cx_pipeline.ingest.feeds import FEEDS

IN_FLIGHT = (  # a run of these statuses will still read its inputs
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)
# what people enter in the app, and when: newer than the last run's start, it is not in the warehouse yet
APP_ENTRIES = {"review decisions": ("review_decisions", "decided_at"), "QA entries": ("inspections", "entered_at")}


@dataclass(frozen=True)
class Outlook:
    """Why the pipeline has work to do (`reason`, None when nothing is new), and what was asked to find out."""

    reason: str | None
    asked: list[str]


def outlook(
    instance: dg.DagsterInstance,
    sources: dict[str, SourceResource],
    app_store: AppStoreResource,
    now: datetime,
    *,
    job: str,
    fast_path_job: str,
) -> Outlook:
    """The first reason the pipeline `job` has work to do at `now`, cheapest question first; `sources` holds
    each feed's source by feed name."""
    asked: list[str] = []
    for reason, question in _questions(instance, sources, app_store, now, job, fast_path_job):
        if reason:
            return Outlook(reason, asked)
        asked.append(question)
    return Outlook(None, asked)


def _questions(
    instance: dg.DagsterInstance,
    sources: dict[str, SourceResource],
    app_store: AppStoreResource,
    now: datetime,
    job: str,
    fast_path_job: str,
) -> Iterator[tuple[str | None, str]]:
    """(reason or None, what was asked), cheapest first."""
    records = instance.get_run_records(dg.RunsFilter(job_name=job), limit=1)
    last = records[0] if records else None
    if last is None or last.start_time is None:
        yield "no run of the pipeline has started yet", "the run history"
        return
    run_id, status = last.dagster_run.run_id, last.dagster_run.status
    started = datetime.fromtimestamp(last.start_time, UTC)
    if status in IN_FLIGHT:  # a second run behind it would find what it takes
        yield None, f"the last run {run_id} is still {status.value.lower()}: it takes what is new"
        return
    if status != dg.DagsterRunStatus.SUCCESS:
        yield f"the last run ({run_id}) did not succeed ({status.value})", "the run history"
        return
    begun = f"{started:%Y-%m-%d %H:%M} UTC"
    turned = started.date() != now.date()
    yield (f"a day turned since the last run began ({begun})" if turned else None), f"the last run, {run_id}, {begun}"
    fast = dg.RunsFilter(job_name=fast_path_job, statuses=[dg.DagsterRunStatus.SUCCESS], created_after=started)
    landed = bool(instance.get_run_records(fast, limit=1))
    since = "the fast path landed stock or order changes since, which notices and KPIs have not seen"
    yield (since if landed else None), "the fast path's runs"
    probes: list[tuple[str, ChangeProbe, str]] = []
    for name, feed in FEEDS.items():
        event = instance.get_latest_materialization_event(dg.AssetKey(feed.table))
        metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
        if (due := metadata.get("next_full_read_at")) and datetime.fromisoformat(str(due.value)) <= now:
            yield f"{name}: its full read is due (since {due.value})", ""
        source, cursor = sources[name], metadata.get("cursor")
        if not isinstance(source, ChangeProbe):
            yield f"{name}: its source ({type(source).__name__}) cannot be asked whether anything changed", ""
        elif cursor is None or not str(cursor.value)[:1].isdigit():  # a first pull, or a snapshot read whole
            yield f"{name}: its last pull recorded no cursor to ask from", ""
        else:
            probes.append((name, source, str(cursor.value)))
    with app_store.connect() as store:
        for what, (table, column) in APP_ENTRIES.items():
            (newest,) = store.execute(f"SELECT max({column}) FROM {table}").fetchone()
            entered = newest is not None and datetime.fromisoformat(newest) > started
            news = f"{what} entered since the last run began (the newest at {newest})"
            yield (news if entered else None), f"the {what}"
    for name, source, cursor in probes:
        as_of = source.changed_since(FEEDS[name], cursor)
        changed = f"{name}: changed at the source since {cursor} (its clock: {as_of})" if as_of else None
        yield changed, f"{name} since {cursor}"
