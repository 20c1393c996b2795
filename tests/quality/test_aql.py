"""ANSI/ASQ Z1.4 (ISO 2859-1) sampling, general inspection level II, single sampling, normal inspection:
the tables against published values, the arrows, and the lot verdict."""

import pytest

from cx_pipeline.quality import aql


@pytest.mark.parametrize(
    ("lots", "letter", "sample"),
    [
        ((2, 8), "A", 2), ((9, 15), "B", 3), ((16, 25), "C", 5), ((26, 50), "D", 8), ((51, 90), "E", 13),
        ((91, 150), "F", 20), ((151, 280), "G", 32), ((281, 500), "H", 50), ((501, 1200), "J", 80),
        ((1201, 3200), "K", 125), ((3201, 10000), "L", 200), ((10001, 35000), "M", 315),
        ((35001, 150000), "N", 500), ((150001, 500000), "P", 800), ((500001, 10**7), "Q", 1250),
    ],
)  # fmt: skip
def test_table_i_gives_the_published_code_letter_and_sample_size(lots, letter, sample):
    for lot_size in lots:
        assert aql.code_letter(lot_size) == letter
        assert aql.plan(lot_size, 0).sample_size == sample


# (lot size, AQL) -> (sample size, Ac, Re), as published in Table II-A with its arrows followed
PUBLISHED = {
    (1000, 2.5): (80, 5, 6), (1000, 4.0): (80, 7, 8), (1000, 1.0): (80, 2, 3), (1000, 6.5): (80, 10, 11),
    (3000, 2.5): (125, 7, 8), (3000, 4.0): (125, 10, 11), (3000, 0.65): (125, 2, 3), (3000, 1.5): (125, 5, 6),
    (500, 2.5): (50, 3, 4), (500, 4.0): (50, 5, 6), (500, 1.0): (50, 1, 2), (200, 2.5): (32, 2, 3),
    (200, 4.0): (32, 3, 4), (150, 2.5): (20, 1, 2), (150, 4.0): (20, 2, 3), (8000, 2.5): (200, 10, 11),
    (8000, 4.0): (200, 14, 15), (20000, 2.5): (315, 14, 15), (100000, 1.5): (500, 14, 15),
    # arrows: the plan below (down) or above (up) applies, with its own sample size
    (40, 2.5): (5, 0, 1), (40, 4.0): (13, 1, 2), (100, 1.0): (13, 0, 1), (100, 1.5): (32, 1, 2),
    (20000, 6.5): (200, 21, 22), (100000, 4.0): (315, 21, 22), (10, 2.5): (5, 0, 1), (10, 0.65): (20, 0, 1),
}  # fmt: skip


@pytest.mark.parametrize(("lot_and_aql", "expected"), PUBLISHED.items())
def test_table_ii_a_gives_the_published_plans(lot_and_aql, expected):
    plan = aql.plan(*lot_and_aql)
    assert (plan.sample_size, plan.accept, plan.reject) == expected


def test_aql_zero_accepts_no_defect():
    assert aql.plan(1000, 0) == aql.Plan("J", 80, 0, 1)


def test_a_lot_is_inspected_with_the_largest_sample_its_severities_need_and_never_more_than_it_holds():
    plan = aql.lot_plan(12)  # B: critical 3 units, major moves down to C (5 units), minor stays on B
    assert plan.sample_size == 5
    assert {s: (p.sample_size, p.accept) for s, p in plan.plans.items()} == {
        "critical": (3, 0), "major": (5, 0), "minor": (3, 0)
    }  # fmt: skip
    small = aql.lot_plan(4)  # the major plan (C, 5 units) asks for more than the lot holds
    assert small.sample_size == 4
    assert aql.lot_plan(1).sample_size == 1


def test_one_rejected_severity_rejects_the_lot():
    plan = aql.lot_plan(1000)  # J, 80 units: critical 0/1, major 5/6, minor 7/8
    assert plan.verdict({"critical": 0, "major": 5, "minor": 7})["lot"] == "accept"
    rejected = plan.verdict({"critical": 0, "major": 6, "minor": 0})
    assert (rejected["major"], rejected["lot"]) == ("reject", "reject")
    assert plan.verdict({"critical": 1})["lot"] == "reject"


def test_an_aql_outside_the_table_or_a_bad_lot_size_is_refused():
    with pytest.raises(aql.AqlError, match=r"AQL 3\.0 is not in the Z1\.4 table"):
        aql.plan(100, 3.0)
    with pytest.raises(aql.AqlError, match="whole number"):
        aql.code_letter(0)
