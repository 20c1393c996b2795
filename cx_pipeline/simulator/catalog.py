"""The demo store's assortment: categories, suppliers and products (vocabularies and their generation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DAY = 86_400
YEAR = 365 * DAY


@dataclass(frozen=True)
class Category:
    share: float  # of the assortment
    price_median: float  # EUR
    price_spread: float  # sigma of the log-normal price
    packs: tuple[int, ...]  # case sizes a supplier ships in
    return_rate: float  # how likely a settled order of it comes back as a return inquiry
    damage: dict[str, float]  # damage reasons seen at QC, weighted
    adjectives: tuple[str, ...]
    nouns: tuple[str, ...]


CATEGORIES: dict[str, Category] = {
    "apparel": Category(
        0.24,
        39.0,
        0.5,
        (6, 12),
        0.55,
        {"wrong_item": 4, "defective": 2, "water_damage": 1, "crushed": 1},
        ("Classic", "Slim", "Relaxed", "Organic", "Vintage", "Essential"),
        ("T-Shirt", "Hoodie", "Jeans", "Jacket", "Dress", "Sweater", "Shorts"),
    ),
    "electronics": Category(
        0.16,
        89.0,
        0.8,
        (2, 4, 10),
        0.3,
        {"defective": 4, "missing_parts": 3, "crushed": 2, "water_damage": 1},
        ("Wireless", "Smart", "Compact", "Pro", "Portable", "Ultra"),
        ("Headphones", "Speaker", "Charger", "Keyboard", "Mouse", "Webcam", "Power Bank"),
    ),
    "home": Category(
        0.18,
        29.0,
        0.6,
        (4, 6, 12),
        0.2,
        {"crushed": 5, "water_damage": 2, "missing_parts": 2, "wrong_item": 1},
        ("Ceramic", "Nordic", "Rustic", "Modern", "Cosy", "Bamboo"),
        ("Mug", "Lamp", "Cushion", "Vase", "Throw", "Planter", "Frame"),
    ),
    "beauty": Category(
        0.14,
        19.0,
        0.5,
        (12, 24),
        0.1,
        {"crushed": 3, "water_damage": 2, "wrong_item": 2, "defective": 1},
        ("Hydrating", "Gentle", "Radiant", "Daily", "Repair", "Pure"),
        ("Serum", "Cleanser", "Moisturiser", "Shampoo", "Lip Balm", "Sunscreen"),
    ),
    "toys": Category(
        0.14,
        24.0,
        0.6,
        (6, 12),
        0.15,
        {"missing_parts": 4, "crushed": 3, "defective": 2},
        ("Wooden", "Magnetic", "Classic", "Junior", "Deluxe", "Mini"),
        ("Puzzle", "Building Set", "Plush Bear", "Race Car", "Board Game", "Doll"),
    ),
    "sports": Category(
        0.14,
        34.0,
        0.7,
        (4, 6, 10),
        0.35,
        {"defective": 3, "crushed": 2, "wrong_item": 2, "missing_parts": 1},
        ("Trail", "Performance", "Training", "Outdoor", "Lightweight", "Team"),
        ("Yoga Mat", "Water Bottle", "Running Shoes", "Dumbbell", "Backpack", "Football"),
    ),
}

REQUIRED_ATTRIBUTES: dict[str, list[str]] = {
    "apparel": ["color", "size", "material"],
    "electronics": ["brand", "model", "warranty_months"],
    "home": ["color", "material", "dimensions_cm"],
    "beauty": ["brand", "volume_ml", "skin_type"],
    "toys": ["brand", "age_range", "material"],
    "sports": ["brand", "size", "sport"],
}

ATTRIBUTE_VALUES: dict[str, tuple[object, ...]] = {
    "color": ("black", "white", "navy", "grey", "green", "red", "beige"),
    "size": ("XS", "S", "M", "L", "XL"),
    "material": ("cotton", "polyester", "wool", "wood", "ceramic", "plastic", "linen"),
    "brand": ("Aurora", "Nordhavn", "Kestrel", "Lumen", "Pinewood", "Vela", "Orbit"),
    "warranty_months": (12, 24, 36),
    "volume_ml": (30, 50, 100, 200, 250),
    "skin_type": ("all", "dry", "oily", "sensitive"),
    "age_range": ("0-3", "3-6", "6-9", "9-12", "12+"),
    "sport": ("running", "yoga", "football", "fitness", "hiking"),
}

N_SUPPLIERS = 10
PRODUCT_STATUS_WEIGHTS = {"active": 0.86, "inactive": 0.08, "discontinued": 0.06}
MISSING_ATTRIBUTES_SHARE = 0.08
HOUR_PAST = 3_600  # the last pre-existing catalog edit lands at least an hour before the world's `now`
ABSENT = object()  # an attribute left out of the record entirely (as opposed to sent as null)


def build_suppliers(rng: np.random.Generator) -> pd.DataFrame:
    """Suppliers, each specialised in two categories, with its own lead time and reliability."""
    names = list(CATEGORIES)
    ids = [f"SUP-{i:02d}" for i in range(1, N_SUPPLIERS + 1)]
    # Every category gets at least one supplier: walk the categories round-robin, then pair each with another.
    first = [names[i % len(names)] for i in range(N_SUPPLIERS)]
    second = [names[(i + 1 + int(rng.integers(0, len(names) - 1))) % len(names)] for i in range(N_SUPPLIERS)]
    return pd.DataFrame(
        {
            "supplier_id": ids,
            "category_a": first,
            "category_b": second,
            "lead_days": rng.integers(5, 16, N_SUPPLIERS),
            # Multiplies the base rates of late, short and damaged deliveries: 0.5 is a model supplier.
            "unreliability": rng.uniform(0.5, 1.7, N_SUPPLIERS),
            "order_offset": rng.uniform(0, 3.5 * DAY, N_SUPPLIERS).astype(np.int64),
        }
    )


def build_products(rng: np.random.Generator, n: int, suppliers: pd.DataFrame, now: int) -> pd.DataFrame:
    """One row per product (its first version); `popularity` and `pack` drive demand and replenishment."""
    names = np.array(list(CATEGORIES))
    shares = np.array([c.share for c in CATEGORIES.values()])
    category = names[rng.choice(len(names), n, p=shares / shares.sum())]
    frame = pd.DataFrame({"sku": [f"SKU-{i:06d}" for i in range(1, n + 1)], "category": category})

    frame["supplier_id"] = _pick_suppliers(rng, category, suppliers)
    frame["title"] = ""
    frame["price"] = 0.0
    frame["pack"] = 0
    for name, spec in CATEGORIES.items():
        rows = np.flatnonzero(category == name)
        k = len(rows)
        adjective = np.array(spec.adjectives)[rng.integers(0, len(spec.adjectives), k)]
        noun = np.array(spec.nouns)[rng.integers(0, len(spec.nouns), k)]
        frame.loc[rows, "title"] = pd.Series(adjective).str.cat(noun, sep=" ").to_numpy()
        price = spec.price_median * rng.lognormal(0, spec.price_spread, k)
        frame.loc[rows, "price"] = np.maximum(np.ceil(price) - 0.01, 0.99)  # shelf prices end in .99
        frame.loc[rows, "pack"] = np.array(spec.packs)[rng.integers(0, len(spec.packs), k)]
    frame["price"] = frame["price"].round(2)
    frame["currency"] = "EUR"
    statuses = list(PRODUCT_STATUS_WEIGHTS)
    frame["status"] = np.array(statuses)[rng.choice(3, n, p=list(PRODUCT_STATUS_WEIGHTS.values()))]
    # Ages skew old (u ** 0.7 leans towards 1); none is under ~4 months old, so each has history to sell.
    age = 120 * DAY + (6 * YEAR - 120 * DAY) * rng.uniform(0, 1, n) ** 0.7
    frame["registered_at"] = now - age.astype(np.int64)
    frame["updated_at"] = frame["registered_at"] + (age * rng.uniform(0.05, 1, n)).astype(np.int64)
    frame["updated_at"] = np.minimum(frame["updated_at"], now - HOUR_PAST)
    frame["attributes"] = build_attributes(rng, category)
    frame["popularity"] = np.where(frame["status"] == "active", rng.lognormal(0, 1.0, n), 0.0)
    return frame


def _pick_suppliers(rng: np.random.Generator, category: np.ndarray, suppliers: pd.DataFrame) -> np.ndarray:
    """A supplier for each product among those that carry its category."""
    chosen = np.empty(len(category), dtype=object)
    for name in CATEGORIES:
        rows = np.flatnonzero(category == name)
        carriers = suppliers.loc[
            (suppliers["category_a"] == name) | (suppliers["category_b"] == name), "supplier_id"
        ].to_numpy()
        chosen[rows] = carriers[rng.integers(0, len(carriers), len(rows))]
    return chosen


def build_attributes(rng: np.random.Generator, category: np.ndarray) -> list[dict[str, object]]:
    """The category's required attributes per product; ~8% miss one or more (left out or sent as null)."""
    n = len(category)
    columns: dict[str, np.ndarray] = {}
    for attribute, values in ATTRIBUTE_VALUES.items():
        columns[attribute] = np.array(values, dtype=object)[rng.integers(0, len(values), n)]
    columns["model"] = np.char.add("M-", rng.integers(100, 9999, n).astype(str)).astype(object)
    dims = rng.integers(5, 120, (n, 3)).astype(str)
    columns["dimensions_cm"] = np.char.add(np.char.add(np.char.add(dims[:, 0], "x"), dims[:, 1]), "x")
    columns["dimensions_cm"] = np.char.add(columns["dimensions_cm"], dims[:, 2]).astype(object)

    incomplete = rng.uniform(0, 1, n) < MISSING_ATTRIBUTES_SHARE
    attributes: list[dict[str, object]] = [{} for _ in range(n)]
    for name, required in REQUIRED_ATTRIBUTES.items():
        rows = np.flatnonzero(category == name)
        values = {a: columns[a][rows].copy() for a in required}
        # Each incomplete product misses its first missing attribute for sure and each other with p=0.3.
        broken = incomplete[rows]
        first = rng.integers(0, len(required), len(rows))
        for j, attribute in enumerate(required):
            missing = broken & ((first == j) | (rng.uniform(0, 1, len(rows)) < 0.3))
            values[attribute][missing] = np.where(rng.uniform(0, 1, missing.sum()) < 0.5, ABSENT, None)
        for i, record in zip(rows, zip(*values.values(), strict=True), strict=True):
            attributes[i] = {a: v for a, v in zip(required, record, strict=True) if v is not ABSENT}
    return attributes
