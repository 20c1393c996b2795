"""The demo world's product quality, and the planted truth the return-risk model is measured against.

Every product has a latent defect rate per inspection item of its category (defects per hundred units, DHU):
its supplier's rate for the category and item, times a factor of its own (one style is sewn better than
another). QA inspected a share of the lots received so far, by the checklists and Z1.4 sample sizes, and
found defects at those rates. Every shipped order line may come back as a return inquiry, with a
probability that rises with the DHU of a few *driving* items of its category (`RETURN_DRIVERS`), with
price, and with a per-SKU factor nobody observes. `expected_returns` is the oracle: the return inquiries per
SKU in a window that the world's parameters imply (its demand, shipping and return probability), which a
perfect model would predict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cx_pipeline.quality import aql
from cx_pipeline.quality.checklists import load_checklists

DAY = 86_400
# Per category: item -> added log-rate of return inquiries per 1 DHU of the SKU's defect rate. The model
# should find these items, and only these, as the ones that drive returns.
RETURN_DRIVERS: dict[str, dict[str, float]] = {
    "apparel": {"sizing": 0.10, "colour_match": 0.07},
    "electronics": {"power_on": 0.12, "accessories": 0.06},
    "home": {"breakage": 0.09},
    "beauty": {"seal": 0.10},
    "toys": {"completeness": 0.09},
    "sports": {"sizing": 0.08, "function": 0.06},
}
# Return inquiries per shipped line at zero defects and the category's median price.
BASE_RETURN_RATE = {"apparel": 0.030, "electronics": 0.020, "home": 0.010, "beauty": 0.006, "toys": 0.010,
                    "sports": 0.016}  # fmt: skip
PRICE_ELASTICITY = 0.3  # dearer items come back a little more often
SKU_NOISE = 0.35  # sigma of the unobserved per-SKU factor (log scale)
# Latent DHU: MEAN_DHU x lognormal(SUPPLIER_SPREAD) per supplier, category and item x lognormal(SKU_SPREAD) per SKU
MEAN_DHU, SUPPLIER_SPREAD, SKU_SPREAD = 4.0, 0.3, 0.8
INSPECTED_SHARE = 0.6  # of received lots that QA inspected
SEVERITY_SHARE = np.array([0.02, 0.38, 0.60])  # of the defects found: critical, major, minor
RETURN_DELAY_DAYS = (2, 14)  # a return inquiry comes this long after shipping (uniform)
INSPECTOR = "qa-history"


@dataclass(frozen=True)
class Quality:
    defect_rates: pd.DataFrame  # sku, supplier_id, category, item, dhu (the latent truth)
    inspections: pd.DataFrame  # one row per inspected lot: receipt_id, line_no, lot_size, sample_size, inspected_at
    defects: pd.DataFrame  # receipt_id, line_no, item, severity, defects
    return_lines: pd.DataFrame  # order_id, sku, shipped_at (epoch s), probability: each shipped line's chance
    truth: pd.DataFrame  # per SKU: shipped_per_day (expected), return_probability (per shipped line)

    def expected_returns(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
        """The oracle: the return inquiries per SKU expected in [start, end) (a window inside the timeline,
        at least RETURN_DELAY_DAYS after its start), from the SKU's demand and return probability."""
        days = (pd.Timestamp(end) - pd.Timestamp(start)) / pd.Timedelta(days=1)
        expected = self.truth["shipped_per_day"] * self.truth["return_probability"] * days
        return pd.Series(expected.to_numpy(), index=self.truth["sku"])

    def draw_returns(self, rng: np.random.Generator) -> pd.DataFrame:
        """The return inquiries that happen: order_id, sku, created_at (epoch s), one per returned line."""
        lines = self.return_lines
        returned = lines[rng.uniform(0, 1, len(lines)) < lines["probability"].to_numpy()]
        low, high = (d * DAY for d in RETURN_DELAY_DAYS)
        created = returned["shipped_at"].to_numpy() + rng.integers(low, high, len(returned))
        return pd.DataFrame({"order_id": returned["order_id"].to_numpy(), "sku": returned["sku"].to_numpy(),
                             "created_at": created})  # fmt: skip

    def history_csv(self) -> str:
        """The inspections as a QA team would upload them (`cx-pipeline` CSV import format)."""
        wide = (
            self.defects.pivot_table(
                index=["receipt_id", "line_no", "item"], columns="severity", values="defects", fill_value=0
            )
            .astype(int)
            .reset_index()
        )
        wide = wide.merge(self.inspections[["receipt_id", "line_no", "inspected_at"]], on=["receipt_id", "line_no"])
        wide["inspected_at"] = wide["inspected_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        columns = ["receipt_id", "line_no", "item", *aql.SEVERITIES, "inspected_at"]
        return wide.reindex(columns=columns, fill_value=0).to_csv(index=False)


def build_quality(
    rng: np.random.Generator,
    products: pd.DataFrame,
    receipts: pd.DataFrame,
    lines: pd.DataFrame,
    orders: pd.DataFrame,
    line_rate: np.ndarray,
    now: int,
) -> Quality:
    """Latent defect rates, the inspections of lots received before `now`, and every shipped line's
    probability of a return inquiry. `line_rate`: each SKU's expected order lines a day."""
    checklists = load_checklists()
    items = pd.DataFrame(
        [(c, item) for c, listed in checklists.categories.items() for item in listed], columns=["category", "item"]
    )
    pairs = products[["supplier_id", "category"]].drop_duplicates().merge(items, on="category")
    pairs = pairs.sort_values(["supplier_id", "category", "item"]).reset_index(drop=True)
    pairs["base"] = MEAN_DHU * rng.lognormal(-(SUPPLIER_SPREAD**2) / 2, SUPPLIER_SPREAD, len(pairs))
    rates = products[["sku", "supplier_id", "category"]].merge(pairs, on=["supplier_id", "category"])
    rates["dhu"] = (rates["base"] * rng.lognormal(-(SKU_SPREAD**2) / 2, SKU_SPREAD, len(rates))).round(3)
    rates = rates.drop(columns="base")

    inspections, defects = _inspections(rng, products, receipts, rates, checklists.aql, now)
    probability = _return_probability(rng, products, rates)
    # The share of a SKU's lines that ship (the rest are cancelled), over its lines ordered well before the end.
    settled = lines[lines["ordered_at"] <= lines["ordered_at"].max() - 10 * DAY]
    shipped_share = settled.groupby("sku_index")["shipped"].mean().reindex(range(len(products)), fill_value=0)
    truth = pd.DataFrame(
        {
            "sku": products["sku"].to_numpy(),
            "shipped_per_day": line_rate * shipped_share.to_numpy(),
            "return_probability": probability,
        }
    )
    shipped = lines[lines["shipped"]]
    return_lines = pd.DataFrame(
        {
            "order_id": shipped["order_id"].to_numpy(),
            "sku": products["sku"].to_numpy()[shipped["sku_index"].to_numpy()],
            "shipped_at": orders["changed_at"].to_numpy()[shipped["order"].to_numpy()],
            "probability": probability[shipped["sku_index"].to_numpy()],
        }
    )
    return Quality(rates, inspections, defects, return_lines, truth)


def _inspections(
    rng: np.random.Generator,
    products: pd.DataFrame,
    receipts: pd.DataFrame,
    rates: pd.DataFrame,
    aqls: dict[str, float],
    now: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A share of the lots checked by QA before `now`: defective units per item at the SKU's rate, split
    over severities."""
    done = receipts[(receipts["qc_at"] <= now) & (rng.uniform(0, 1, len(receipts)) < INSPECTED_SHARE)]
    lots = done[["receipt_id", "line_no", "sku_index", "qty_received", "qc_at"]].reset_index(drop=True)
    lots["category"] = products["category"].to_numpy()[lots["sku_index"]]
    lots["sku"] = products["sku"].to_numpy()[lots["sku_index"]]
    sizes = {size: aql.lot_plan(int(size), aqls).sample_size for size in lots["qty_received"].unique()}
    lots["sample_size"] = lots["qty_received"].map(sizes)
    checks = lots.merge(rates[["sku", "item", "dhu"]], on="sku")  # one row per lot and item
    # QA counts sampled units with a defect of each item, so never more than the sample holds
    found = rng.binomial(checks["sample_size"].to_numpy(), np.minimum(checks["dhu"].to_numpy() / 100, 1))
    split = rng.multinomial(found, SEVERITY_SHARE)
    defects = pd.DataFrame(
        {
            "receipt_id": np.repeat(checks["receipt_id"].to_numpy(), 3),
            "line_no": np.repeat(checks["line_no"].to_numpy(), 3),
            "item": np.repeat(checks["item"].to_numpy(), 3),
            "severity": np.tile(aql.SEVERITIES, len(checks)),
            "defects": split.reshape(-1),
        }
    )
    inspections = pd.DataFrame(
        {
            "receipt_id": lots["receipt_id"],
            "line_no": lots["line_no"],
            "lot_size": lots["qty_received"],
            "sample_size": lots["sample_size"],
            "inspected_at": pd.to_datetime(lots["qc_at"], unit="s", utc=True),
        }
    )
    return inspections, defects


def _return_probability(rng: np.random.Generator, products: pd.DataFrame, rates: pd.DataFrame) -> np.ndarray:
    """Each SKU's probability that a shipped line comes back as a return inquiry (the planted relationship)."""
    drivers = pd.DataFrame(
        [(c, item, beta) for c, items in RETURN_DRIVERS.items() for item, beta in items.items()],
        columns=["category", "item", "beta"],
    )
    lift = rates.merge(drivers, on=["category", "item"]).assign(effect=lambda f: f["beta"] * f["dhu"])
    lift = lift.groupby("sku")["effect"].sum().reindex(products["sku"], fill_value=0).to_numpy()
    median_price = products.groupby("category")["price"].transform("median")
    probability = (
        products["category"].map(BASE_RETURN_RATE)
        * (products["price"] / median_price) ** PRICE_ELASTICITY
        * np.exp(lift)
        * rng.lognormal(-(SKU_NOISE**2) / 2, SKU_NOISE, len(products))
    )
    return np.minimum(probability.to_numpy(), 0.9)
