"""Helpdesk sources: Zendesk's incremental ticket export and Gorgias's ticket list, each against a test server that
follows the vendor's published API (auth, paging, rate limits), pulled through the real assets into the warehouse.
Tickets become inquiries with a derived reason; bodies and customer contact details never reach the warehouse."""

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cx_pipeline.assets.resources import GorgiasResource, ZendeskResource, source_from_env
from cx_pipeline.core.rule_files import RulesError
from cx_pipeline.ingest.feeds import FEEDS
from cx_pipeline.ingest.http import UpstreamError
from cx_pipeline.ingest.sources.helpdesk import load_rules
from cx_pipeline.simulator import Simulator
from cx_pipeline.simulator.gorgias import ORDER_FIELD as GORGIAS_ORDER
from cx_pipeline.simulator.gorgias import REASON_FIELD as GORGIAS_REASON
from cx_pipeline.simulator.gorgias import TICKETS_PATH, GorgiasSimulator
from cx_pipeline.simulator.zendesk import EXPORT_PATH, ORDER_FIELD, REASON_FIELD, SKU_FIELD, ZendeskSimulator
from cx_pipeline.warehouse import connect
from tests.helpers import check_results, materializations, nodes, resources

EMAIL, ZENDESK_TOKEN, GORGIAS_KEY = "agent@shop.example", "zd-secret-token-1", "gorgias-secret-key-1"
PERSONAL = ("@example.com", "Hello, this is", "Hallo, hier ist", "Jane Doe", "Erika Muster")


@pytest.fixture
def zendesk(sim: Simulator) -> ZendeskSimulator:
    with ZendeskSimulator(sim.world, EMAIL, ZENDESK_TOKEN) as server:
        yield server


@pytest.fixture
def gorgias(sim: Simulator) -> GorgiasSimulator:
    with GorgiasSimulator(sim.world, EMAIL, GORGIAS_KEY) as server:
        yield server


def zendesk_source(server: ZendeskSimulator, **settings: object) -> ZendeskResource:
    fields = {"order_field_id": ORDER_FIELD, "sku_field_id": SKU_FIELD, "reason_field_id": REASON_FIELD}
    return ZendeskResource(url=server.url, email=EMAIL, token=ZENDESK_TOKEN, backoff_seconds=0.05, **fields | settings)


def gorgias_source(server: GorgiasSimulator, **settings: object) -> GorgiasResource:
    fields = {"order_field_id": GORGIAS_ORDER, "reason_field_id": GORGIAS_REASON}
    return GorgiasResource(url=server.url, email=EMAIL, token=GORGIAS_KEY, backoff_seconds=0.05, **fields | settings)


def run(sim: Simulator, warehouse_path: Path, helpdesk: object) -> dg.ExecuteInProcessResult:
    """The ingest room's assets and contracts, with the helpdesk feed from `helpdesk` (the rest from the REST
    simulator: the inquiries contract checks order and SKU references against them)."""
    return dg.materialize(
        nodes("ingest"), resources={**resources(sim, warehouse_path), "helpdesk": helpdesk}, raise_on_error=False
    )


def table(warehouse_path: Path, sql: str) -> pd.DataFrame:
    with connect(str(warehouse_path), read_only=True) as con:
        return con.execute(sql).df()


def assert_nothing_personal(warehouse_path: Path) -> None:
    """No subject, body, name or email anywhere the pipeline keeps tickets: raw, landing as sent, quarantine."""
    texts = table(
        warehouse_path,
        """SELECT to_json(r)::VARCHAR AS t FROM raw_inquiries r
        UNION ALL SELECT _raw::VARCHAR FROM landing_inquiries
        UNION ALL SELECT row_data::VARCHAR FROM quarantine WHERE feed = 'inquiries'""",
    )["t"]
    leaks = [t for t in texts if any(p in t for p in PERSONAL)]
    assert not leaks, leaks[:3]


def landed_ids(warehouse_path: Path) -> list[str]:
    return table(warehouse_path, "SELECT inquiry_id FROM raw_inquiries")["inquiry_id"].tolist()


def world_reasons(sim: Simulator, source: str) -> pd.Series:
    world = sim.world.inquiries
    return pd.Series(
        world["reason"].to_numpy(), index=source + "-" + world["inquiry_id"].str[4:].astype(int).astype(str)
    )


def test_zendesk_tickets_land_as_inquiries_with_their_reason_and_nothing_personal(sim, zendesk, warehouse_path):
    result = run(sim, warehouse_path, zendesk_source(zendesk))

    assert result.success
    assert check_results(result)["raw_inquiries"].passed
    landed = table(warehouse_path, "SELECT inquiry_id, order_id, sku, reason, tags::VARCHAR AS tags FROM raw_inquiries")
    exported = {f"zendesk-{i}" for i, g in zendesk.generated.items() if g <= sim.world.clock_seconds - 60}
    assert set(landed["inquiry_id"]) == exported and len(exported) > 150
    # tags, contact-reason field and keywords in English and German together recover every reason as it happened
    expected = world_reasons(sim, "zendesk")
    assert (landed.set_index("inquiry_id")["reason"] == expected[landed["inquiry_id"]]).all()
    assert landed["tags"].str.contains("wo-ist-meine-bestellung").any() and landed["order_id"].notna().mean() > 0.8
    metadata = materializations(result)["raw_inquiries"]
    share = (landed["reason"] == "other").mean()
    assert metadata["rows_unclassified"] == (landed["reason"] == "other").sum() > 0
    assert metadata["unclassified_share"] == pytest.approx(share, abs=1e-4)
    assert zendesk.requests[EXPORT_PATH] == 1  # 1000 tickets a page
    assert_nothing_personal(warehouse_path)


def test_zendesk_second_run_reads_only_the_tickets_changed_since(sim, zendesk, warehouse_path):
    source = zendesk_source(zendesk)
    assert run(sim, warehouse_path, source).success
    first = zendesk.requests[EXPORT_PATH]
    other = [i for i, t in zendesk.tickets.items() if t["subject"] == "Question about sizing"][:1]
    late = [i for i, t in zendesk.tickets.items() if t["created_at"] < "2026-11-01"][:1]
    exported = set(landed_ids(warehouse_path))
    sim.world.advance(48)  # two days on: a few new inquiries (the contract's volume rule expects some)
    moment = sim.world.clock - timedelta(minutes=5)
    zendesk.edit(other[0], at=moment, tags=["web", "storno"])  # an agent files it under cancellations
    zendesk.edit(late[0], at=moment, status="solved")

    result = run(sim, warehouse_path, source)

    assert result.success
    metadata = materializations(result)["raw_inquiries"]
    assert zendesk.requests[EXPORT_PATH] == first + 1
    assert metadata["rows_updated"] == 2  # both moved updated_at (the status itself is not landed)
    new = {f"zendesk-{i}" for i, g in zendesk.generated.items() if g <= sim.world.clock_seconds - 60} - exported
    assert metadata["rows_new"] == len(new) > 0
    assert metadata["rows_fetched"] == len(new) + 2 + metadata["rows_unchanged"]
    assert metadata["rows_unchanged"] <= 1  # the ticket at the cursor's own second, read again
    reason = table(warehouse_path, f"SELECT reason FROM raw_inquiries WHERE inquiry_id = 'zendesk-{other[0]}'")
    assert reason["reason"].tolist() == ["cancellation"]


def test_a_bad_ticket_is_quarantined_and_named(sim, zendesk, warehouse_path):
    future, broken = sorted(zendesk.tickets)[:2]
    zendesk.tickets[future]["created_at"] = "2027-06-01T00:00:00Z"
    zendesk.tickets[broken]["updated_at"] = "yesterday-ish"

    result = run(sim, warehouse_path, zendesk_source(zendesk))

    check = check_results(result)["raw_inquiries"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN  # two bad rows hold only themselves
    quarantined = table(warehouse_path, "SELECT row_key, expectation FROM quarantine WHERE feed = 'inquiries'")
    assert {f"zendesk-{future}", f"zendesk-{broken}"} <= set(quarantined["row_key"])
    assert (
        quarantined.loc[quarantined["row_key"] == f"zendesk-{future}", "expectation"].str.contains("created_at").any()
    )
    valid = table(warehouse_path, "SELECT inquiry_id FROM valid_inquiries")["inquiry_id"]
    assert f"zendesk-{future}" not in set(valid) and len(valid) > 150
    assert_nothing_personal(warehouse_path)


def test_zendesk_rate_limit_429_with_retry_after_is_honoured(sim, warehouse_path):
    with (
        ZendeskSimulator(sim.world, EMAIL, ZENDESK_TOKEN, requests_per_window=2, window_seconds=1) as server,
        connect(str(warehouse_path)) as con,
    ):
        batch = zendesk_source(server, page_size=60).pull(con, FEEDS["inquiries"], None)
        assert server.throttled >= 1  # answered 429 with Retry-After: 1, waited, and went on
        assert batch.rows == len([g for g in server.generated.values() if g <= sim.world.clock_seconds - 60])
        assert batch.pages == server.requests[EXPORT_PATH] - server.throttled
        assert batch.as_of == sim.world.clock  # the helpdesk's clock, from its Date header


def test_zendesk_rejects_a_wrong_token_without_quoting_it(sim, zendesk, warehouse_path):
    with connect(str(warehouse_path)) as con, pytest.raises(UpstreamError, match="401") as error:
        ZendeskResource(url=zendesk.url, email=EMAIL, token="wrong-secret-token").pull(con, FEEDS["inquiries"], None)
    assert "wrong-secret-token" not in str(error.value)


def test_zendesk_oauth_bearer_token_is_accepted(sim, warehouse_path):
    with (
        ZendeskSimulator(sim.world, oauth_token="oauth-access-token-1") as server,
        connect(str(warehouse_path)) as con,
    ):
        assert ZendeskResource(url=server.url, token="oauth-access-token-1").pull(con, FEEDS["inquiries"], None).rows


def test_gorgias_rereads_a_lookback_window_and_picks_up_a_late_tag(sim, gorgias, warehouse_path):
    source = gorgias_source(gorgias, lookback_hours=24 * 14)
    first = run(sim, warehouse_path, source)
    assert first.success and check_results(first)["raw_inquiries"].passed
    landed = table(warehouse_path, "SELECT inquiry_id, reason, order_id FROM raw_inquiries").set_index("inquiry_id")
    assert (landed["reason"] == world_reasons(sim, "gorgias")[landed.index]).all()
    assert landed["order_id"].notna().mean() > 0.8
    assert gorgias.requests[TICKETS_PATH] == 3  # 100 tickets a page, newest change first
    assert_nothing_personal(warehouse_path)

    # a rule tags a recent ticket without moving its updated_datetime: only the look-back finds it
    now = pd.Timestamp(sim.world.clock)
    recent = [
        i
        for i, t in gorgias.tickets.items()
        if gorgias.opened[i] <= now and t["subject"] in ("Question about sizing", "Frage zur Rechnung")
    ]
    newest = max(recent, key=lambda i: gorgias.tickets[i]["updated_datetime"])
    gorgias.tag(newest, "retoure")
    before = gorgias.requests[TICKETS_PATH]

    second = run(sim, warehouse_path, source)

    assert second.success
    metadata = materializations(second)["raw_inquiries"]
    since = table(warehouse_path, "SELECT max(updated_at) AS t FROM raw_inquiries")["t"][0] - timedelta(days=14)
    window = [
        i
        for i, t in gorgias.tickets.items()
        if gorgias.opened[i] <= now and t["updated_datetime"] >= f"{since:%Y-%m-%dT%H:%M:%SZ}"
    ]
    assert metadata["rows_fetched"] == len(window) < len(landed) and metadata["rows_updated"] == 1
    assert gorgias.requests[TICKETS_PATH] - before == 1
    reason = table(warehouse_path, f"SELECT reason FROM raw_inquiries WHERE inquiry_id = 'gorgias-{newest}'")
    assert reason["reason"].tolist() == ["return"]


def test_gorgias_rate_limit_429_with_retry_after_is_honoured(sim, warehouse_path):
    with (
        GorgiasSimulator(sim.world, EMAIL, GORGIAS_KEY, bucket_size=2, leak_rate=2.0) as server,
        connect(str(warehouse_path)) as con,
    ):
        batch = gorgias_source(server, page_size=50).pull(con, FEEDS["inquiries"], None)
        assert server.throttled >= 1
        assert batch.rows == sum(server.opened[i] <= pd.Timestamp(sim.world.clock) for i in server.tickets)


def test_the_helpdesk_source_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CX_HELPDESK_SOURCE", "gorgias")
    monkeypatch.setenv("CX_HELPDESK_ORDER_FIELD", "101")
    monkeypatch.setenv("CX_HELPDESK_LOOKBACK_HOURS", "48")
    source = source_from_env("helpdesk")
    assert isinstance(source, GorgiasResource)
    assert source.order_field_id == "101" and source.lookback_hours == 48
    monkeypatch.setenv("CX_HELPDESK_SOURCE", "zendesk")
    monkeypatch.setenv("CX_HELPDESK_SKU_FIELD", "360000002")
    zendesk = source_from_env("helpdesk")
    assert isinstance(zendesk, ZendeskResource) and zendesk.order_field_id == 101 and zendesk.sku_field_id == 360000002


# --- the rules ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rules():
    return load_rules()


@pytest.mark.parametrize(
    ("tags", "field", "text", "language", "reason"),
    [
        (["web", "Wo-ist-meine-Bestellung"], None, "", None, "delivery_delay"),  # tags are case-insensitive
        (["retoure", "delivery_delay"], None, "", None, "return"),  # reasons are tried in the file's order
        (["web"], "Cancellation", "", None, "cancellation"),  # the contact-reason field
        (["storno"], "return", "", None, "cancellation"),  # tags before fields
        ([], None, "Where is my order? Still waiting", "en", "delivery_delay"),
        ([], None, "Ich möchte die Bestellung stornieren", "de", "cancellation"),  # at a word's start: Stornierung
        ([], None, "Wo ist meine   Bestellung?", None, "delivery_delay"),  # language unknown: every language
        ([], None, "Wo ist meine Bestellung?", "en", "other"),  # a known language uses its own keywords only
        ([], None, "I want to return the jacket", "fr", "return"),  # a language without rules: every language
        ([], None, "This item is nonreturnable?", "en", "other"),  # not inside a word
        (["vip"], None, "Question about sizing", "en", "other"),
    ],
)
def test_classification_by_tags_then_fields_then_keywords(rules, tags, field, text, language, reason):
    assert rules.classify(tags, field, text, language) == reason


def test_a_broken_rules_file_names_every_problem(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "tags:\n  refund: [money_back]\n  return: []\n"
        "keywords:\n  english: {return: [send back]}\n  de: {cancellation: storno}\n",
        encoding="utf-8",
    )
    with pytest.raises(RulesError) as error:
        load_rules(path)
    message = str(error.value)
    for problem in ("tags.refund: not a reason", "tags.return: expected a non-empty list", "keywords.english",
                    "keywords.de.cancellation"):  # fmt: skip
        assert problem in message


def test_the_bundled_rules_file_loads_and_is_the_default(monkeypatch, tmp_path):
    assert load_rules().tags["delivery_delay"]
    custom = tmp_path / "mine.yaml"
    custom.write_text("tags:\n  return: [rma]\n", encoding="utf-8")
    monkeypatch.setenv("CX_INQUIRY_RULES", str(custom))
    assert load_rules().classify(["RMA"]) == "return"
