"""Return-inquiry prediction: per SKU, the return inquiries expected in the next 30 days.

Features at a cutoff (from the warehouse, nothing dated after the cutoff): the SKU's defect rate per inspection
segment of its category (its own inspected units, shrunk towards its supplier's rate for the category), its
supplier, category and price, its order lines and its return inquiries before the cutoff (against those its
lines would bring at its category's rate). The model is a Poisson
GLM (scikit-learn's `PoissonRegressor`): counts, a log link, and coefficients a person can read as "one
more defect per hundred units of sizing raises return inquiries by x %".

Split by time: the model trained at cutoff now-60d (labels: returns in the following 30 days) is scored on
cutoff now-30d, whose labels are the last 30 days: that is the held-out evaluation, against a baseline that
predicts each category's mean. The model used for the ranking is trained on both cutoffs and scores now.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import numpy as np
import orjson
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import PoissonRegressor
from sklearn.metrics import mean_poisson_deviance
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from cx_pipeline.core.appstore import iso, note_publication, transaction
from cx_pipeline.quality.checklists import Checklists

HORIZON = timedelta(days=30)
PRIOR_UNITS = 20  # a SKU's own DHU counts as much as its supplier's once it has this many units inspected
MIN_TRAINING_RETURNS = 20  # fewer return inquiries than this in the training labels: not enough to learn from
# Sales, returns and inspections are looked back on over the same number of days at every cutoff of a fit:
# 90, or what the history holds before the earliest cutoff (a new warehouse holds 30 days there). A window
# holding less at one cutoff than at another would make the same feature mean different things. Returns are
# counted from RETURN_LAG days into the window, since a return inquiry comes days after its order.
HISTORY_COLUMNS = ["log_price", "sold_nothing"]
CUTOFF_NUMBERS = ["log_lines", "sold_nothing", "return_ratio"]  # per cutoff, with its label (see history_sql)
# Sales and past returns act on returns along a curve, not a straight line in logs (a SKU with a handful of
# lines, or none returned, is not the straight line's extrapolation): each is fed to the GLM as a cubic spline.
# Past returns' spline stays flat beyond the training values: extended as a line it overfitted 30-day windows,
# whose few returns leave a few distinct values (the demo's 2,000 SKUs: held-out deviance 0.52 -> 0.59).
CURVE_COLUMNS = ["log_lines", "return_ratio"]
# The catalog's groups, one-hot encoded by number: each numbered once per run in sorted order (so the encoded
# columns are the strings' own), from the catalog every frame shares. sklearn sorts and searches strings as Python
# objects: at 1 M SKUs encoding them took 2.4 s of evaluate and score's 7.1 s.
GROUP_COLUMNS = ["category", "supplier_id", "status"]
SPLINE_KNOTS = 4  # evenly spaced: quantile knots collapse where many SKUs sold nothing
CURVE_WEIGHT = 10.0  # their penalty 1/100th of the others' (see build_columns)
RETURNS_PRIOR = 3  # return inquiries added to a SKU's past ones and to those expected of it (see FEATURES_SQL)
MAX_WINDOW_DAYS, MIN_WINDOW_DAYS, RETURN_LAG_DAYS = 90, 30, 14
DRIVERS_SHOWN = 3
ALPHAS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]  # L2 penalties tried (the features are standardised)
SEARCH_ROWS, SEARCH_FOLDS = 50_000, 4
PUBLISHED_RISKS = 1000  # the top of the ranking, for QA's page (and the only SKUs whose drivers are worded)
# The final fits' rows, drawn at random past this: some 60 coefficients need no more, and at 1 M SKUs the fit on
# both cutoffs' 2 M rows took 8 s of the model's 30.
FIT_ROWS = 200_000

DDL = """
CREATE TABLE IF NOT EXISTS return_risk_metrics (
    run_id            VARCHAR PRIMARY KEY,
    scored_at         TIMESTAMPTZ NOT NULL,
    train_cutoff      TIMESTAMPTZ NOT NULL,
    test_cutoff       TIMESTAMPTZ NOT NULL,
    skus              INTEGER NOT NULL,
    actual_returns    INTEGER NOT NULL,     -- in the held-out window
    predicted_returns DOUBLE NOT NULL,
    deviance_model    DOUBLE NOT NULL,      -- mean Poisson deviance on the held-out window
    deviance_baseline DOUBLE NOT NULL,      -- the category-mean baseline's
    capture_model     DOUBLE NOT NULL,      -- share of actual return inquiries in the model's top decile
    capture_baseline  DOUBLE NOT NULL
);
"""


class NotEnoughHistory(RuntimeError):
    """The warehouse does not yet hold enough labelled history to train and evaluate the model."""


def segment(category: str, item: str) -> str:
    return f"{category}.{item}"


# An inquiry without a SKU is about its order's SKUs; only those orders' lines are read (not every order line).
RETURNS_SQL = """
SELECT DISTINCT i.inquiry_id, coalesce(i.sku, o.sku) AS sku, i.created_at
FROM valid_inquiries i
LEFT JOIN (
    SELECT DISTINCT order_id, sku FROM valid_open_orders
    WHERE order_id IN (SELECT order_id FROM valid_inquiries WHERE sku IS NULL AND reason = 'return')
) o ON i.sku IS NULL AND o.order_id = i.order_id
WHERE i.reason = 'return'
"""

# The catalog's columns of every cutoff's frame, read once for the three (the same rows, in the same order).
CATALOG_SQL = """
SELECT sku, title, category, supplier_id, status, ln(greatest(price, 0.01)) AS log_price
FROM valid_catalog ORDER BY sku
"""


def history_sql(cutoffs: int) -> str:
    """SQL for the sales, past returns and labels of every catalog SKU (in CATALOG_SQL's order) at each of
    `cutoffs` cutoffs ($cutoff0, ...) in one read of the orders and the returns: columns log_lines0,
    sold_nothing0, return_ratio0, label0, log_lines1, ..."""
    k = range(cutoffs)
    sold = [f"ordered_at <= $cutoff{i} AND ordered_at > $cutoff{i} - to_days($window)" for i in k]
    past = [f"created_at <= $cutoff{i} AND created_at > $cutoff{i} - to_days($window - $lag)" for i in k]
    later = [f"created_at > $cutoff{i} AND created_at <= $cutoff{i} + to_days(30)" for i in k]
    # The SKU's past return inquiries against those its lines would bring at its category's rate, $prior added
    # to both (the credibility of a Poisson count): with few returns expected, one more moves it little, where a
    # bare log count made the first return weigh as much as doubling many.
    columns = ", ".join(
        f"""ln(1 + coalesce(s.lines{i}, 0)) AS log_lines{i}, (s.lines{i} IS NULL)::DOUBLE AS sold_nothing{i},
        ln((coalesce(h.returns{i}, 0) + $prior) / (coalesce(s.lines{i}, 0)
           * coalesce(sum(h.returns{i}) OVER w / sum(s.lines{i}) OVER w, 0) + $prior)) AS return_ratio{i},
        coalesce(h.label{i}, 0) AS label{i}"""
        for i in k
    )
    lines = ", ".join(f"nullif(count(*) FILTER ({sold[i]}), 0) AS lines{i}" for i in k)
    returned = ", ".join(
        f"nullif(count(*) FILTER ({past[i]}), 0) AS returns{i}, count(*) FILTER ({later[i]}) AS label{i}" for i in k
    )
    return f"""
    WITH returns AS ({RETURNS_SQL}),
    sales AS (   -- order lines, not units: a return inquiry is about a line
        SELECT sku, {lines} FROM valid_open_orders WHERE status <> 'cancelled' GROUP BY sku
    ), history AS (
        SELECT sku, {returned} FROM returns GROUP BY sku
    )
    SELECT {columns}
    FROM valid_catalog c LEFT JOIN sales s USING (sku) LEFT JOIN history h USING (sku)
    WINDOW w AS (PARTITION BY c.category)
    ORDER BY c.sku
    """


def dhu_sql(cutoffs: int) -> str:
    """SQL for the defects per hundred units per SKU and segment at each of `cutoffs` cutoffs ($cutoff0, ...) in
    one pass: each lot's latest entry among those inspected in the cutoff's window, its defects per item (summed
    at import: `inspection_items`), the SKU's own rate shrunk towards its supplier's for the category and segment
    (or the category's, for a supplier without inspections of it). Columns: row (the SKU's in the features),
    position (the segment's), and dhu0, dhu1, ... (the inspections are read once, not once per cutoff).

    The entries' 15 M item rows (at 1 M SKUs) are joined and summed on small numbers, not strings: the SKU by its
    row, the entry's category and supplier by their pair's number, the item by its number; the sums are DOUBLE
    (whole numbers far below 2^53, so exact; a DuckDB sum of integers is a 128-bit one). At 1 M SKUs this halved
    the query (8.5 s to 4.1 s), which had spilled 1 GB to disk, now 0.2 GB."""
    k = range(cutoffs)
    window = [f"inspected_at <= $cutoff{i} AND inspected_at > $cutoff{i} - to_days($window)" for i in k]
    latest = ", ".join(f"max(inspection_id) FILTER ({window[i]}) AS latest{i}" for i in k)
    ids = ", ".join(f"latest{i}" for i in k)
    counts = ", ".join(f"coalesce(e.inspection_id = latest{i}, false) AS in{i}" for i in k)
    per_sku = ", ".join(
        f"sum(units::DOUBLE) FILTER (in{i}) AS units{i}, sum(defects::DOUBLE) FILTER (in{i}) AS defects{i}" for i in k
    )
    rates = ", ".join(f"sum(defects{i}) / sum(units{i}) AS rate{i}" for i in k)
    shrunk = ", ".join(
        f"100 * (coalesce(p.defects{i}, 0) + $prior * coalesce(s.rate{i}, k.rate{i}, 0))"
        f" / (coalesce(p.units{i}, 0) + $prior) AS dhu{i}"
        for i in k
    )
    return f"""
    WITH catalog AS NOT MATERIALIZED (
        SELECT sku, category, supplier_id, (row_number() OVER (ORDER BY sku) - 1)::INTEGER AS row FROM valid_catalog
    ), entries AS NOT MATERIALIZED (   -- read where used: kept whole in memory, they made the query spill
        SELECT * FROM kept_inspections
        WHERE inspected_at > $cutoff0 - to_days($window) AND inspected_at <= $cutoff{cutoffs - 1}
    ), latest AS (     -- each lot's latest entry at each cutoff, and each entry latest at one cutoff or more
        SELECT {ids}, unnest(list_distinct([{ids}])) AS inspection_id
        FROM (SELECT {latest} FROM entries GROUP BY receipt_id, line_no)
    ), sellers AS (    -- the entries' pairs of category and supplier, numbered
        SELECT category, supplier_id, row_number() OVER ()::INTEGER AS seller
        FROM (SELECT DISTINCT category, supplier_id FROM entries)
    ), items AS (
        SELECT item, row_number() OVER ()::SMALLINT AS item_no FROM (SELECT DISTINCT item FROM inspection_items)
    ), known AS (      -- the entries that count, and at which cutoffs
        SELECT e.inspection_id, c.row, s.seller, e.sample_size AS units, {counts}
        FROM entries e JOIN latest USING (inspection_id)
        LEFT JOIN catalog c USING (sku)   -- a SKU no longer listed counts for its supplier's rate (row NULL)
        JOIN sellers s ON s.category IS NOT DISTINCT FROM e.category
                      AND s.supplier_id IS NOT DISTINCT FROM e.supplier_id
    ), per_sku AS (
        SELECT row, seller, item_no, {per_sku}
        FROM known JOIN inspection_items USING (inspection_id) JOIN items USING (item)
        GROUP BY ALL
    ), per_supplier AS (   -- from the SKUs' sums (whole numbers: the same as from every entry, in a fraction of it)
        SELECT category, supplier_id, item, {rates} FROM per_sku JOIN sellers USING (seller) JOIN items USING (item_no)
        GROUP BY ALL
    ), per_category AS (
        SELECT category, item, {rates} FROM per_sku JOIN sellers USING (seller) JOIN items USING (item_no)
        GROUP BY ALL
    )
    SELECT c.row, f.position, {shrunk}
    FROM catalog c
    JOIN families f ON f.category = c.category
    LEFT JOIN items i ON i.item = f.item
    LEFT JOIN per_sku p ON p.row = c.row AND p.item_no = i.item_no
    LEFT JOIN per_supplier s ON s.category = c.category AND s.supplier_id = c.supplier_id AND s.item = f.item
    LEFT JOIN per_category k ON k.category = c.category AND k.item = f.item
    """


def window_days(con: duckdb.DuckDBPyConnection, earliest_cutoff: datetime) -> int:
    """The look-back of every cutoff of a fit: 90 days, or the history before the earliest cutoff."""
    row = con.execute(
        "SELECT date_diff('day', min(ordered_at), ?::TIMESTAMPTZ) FROM valid_open_orders", [earliest_cutoff]
    ).fetchall()
    held = row[0][0] if row and row[0][0] is not None else 0
    if held < MIN_WINDOW_DAYS:
        raise NotEnoughHistory(
            f"the order history before {earliest_cutoff:%Y-%m-%d} spans {held} days; the model needs "
            f"{MIN_WINDOW_DAYS} days before its first training cutoff, so {MIN_WINDOW_DAYS + 60} days in all"
        )
    return min(held, MAX_WINDOW_DAYS)


def features(
    con: duckdb.DuckDBPyConnection, cutoffs: list[datetime], checklists: Checklists, window: int
) -> list[pd.DataFrame]:
    """Per cutoff, one row per catalog SKU: the features at the cutoff over `window` days, and the label (return
    inquiries in the 30 days after it). The frames share the catalog's columns (its strings are held once)."""
    moments = {f"cutoff{i}": cutoff for i, cutoff in enumerate(cutoffs)}
    catalog = con.execute(CATALOG_SQL).df()
    history = con.execute(
        history_sql(len(cutoffs)), {**moments, "window": window, "lag": RETURN_LAG_DAYS, "prior": RETURNS_PRIOR}
    ).fetchnumpy()
    items = pd.DataFrame(
        [(c, i) for c, items in checklists.categories.items() for i in items], columns=["category", "item"]
    )
    con.register("families", items.assign(position=np.arange(len(items))))
    try:
        dhu = con.execute(dhu_sql(len(cutoffs)), {**moments, "prior": PRIOR_UNITS, "window": window}).fetchnumpy()
    finally:
        con.unregister("families")
    release_memory(con)
    # One column per segment, placed by index (a SKU has DHU only in its own category's segments, else 0):
    # a pivot by name in pandas took half the features' time at 1 M SKUs. The numbers are written straight into
    # the frame's block of floats (its own layout: each column contiguous), not copied in from separate columns;
    # the DHU by each cell's offset in that layout (4 M cells at 1 M SKUs: 0.03 s, where [row, column] took 0.4 s).
    names, numbers = segments(checklists), ["log_price", *CUTOFF_NUMBERS]
    strings = [name for name in catalog.columns if name != "log_price"]
    cells = (len(numbers) + dhu["position"]) * len(catalog) + dhu["row"]
    groups = {name: pd.factorize(catalog[name], sort=True)[0] for name in GROUP_COLUMNS}
    frames = []
    for i in range(len(cutoffs)):
        block = np.zeros((len(catalog), len(numbers) + len(names)), order="F")
        block[:, 0] = catalog["log_price"].to_numpy()
        for k, name in enumerate(numbers[1:], 1):
            block[:, k] = history[f"{name}{i}"]
        np.put(block.T, cells, dhu[f"dhu{i}"])  # block.T: the same memory, one column after another
        frame = pd.DataFrame(block, columns=numbers + names, copy=False)
        for k, name in enumerate(strings):
            frame.insert(k, name, catalog[name].to_numpy())
        frame.insert(len(strings) + len(numbers), "label", history[f"label{i}"])
        for name, number in groups.items():
            frame[group_number(name)] = number
        frames.append(frame)
    return frames


def release_memory(con: duckdb.DuckDBPyConnection) -> None:
    """Give the memory of the queries just run back to the system before the fits: DuckDB keeps the pages its
    largest queries used (up to its memory_limit: 1.4 GB at 1 M SKUs, not reported as in use) until the
    connection closes, unless its limit is lowered; it is lowered for a moment, then set back."""
    ((limit,),) = con.execute("SELECT current_setting('memory_limit')").fetchall()
    con.execute("SET memory_limit = '64MB'")
    con.execute(f"SET memory_limit = '{limit}'")


def segments(checklists: Checklists) -> list[str]:
    return [segment(c, i) for c, items in checklists.categories.items() for i in items]


def group_number(column: str) -> str:
    return f"{column}_number"


def build_columns(checklists: Checklists) -> ColumnTransformer:
    """The design matrix: groups one-hot encoded (by number: GROUP_COLUMNS), sales and past returns as splines,
    numbers standardised (last: `score` reads the segments' coefficients from the end)."""
    lines, ratio = CURVE_COLUMNS

    def curve(extrapolation: str) -> Pipeline:
        return make_pipeline(SplineTransformer(SPLINE_KNOTS, knots="uniform", extrapolation=extrapolation),
                             StandardScaler())  # fmt: skip

    return ColumnTransformer(
        [
            ("groups", OneHotEncoder(handle_unknown="ignore"), [group_number(name) for name in GROUP_COLUMNS]),
            ("curves", curve("linear"), [lines]),
            ("ratios", curve("constant"), [ratio]),
            ("numbers", StandardScaler(), HISTORY_COLUMNS + segments(checklists)),
        ],
        # The curves' columns scaled up, so that the L2 penalty (one for every coefficient) hardly bends them: it is
        # there for the many segments and suppliers, and flattening sales and past returns mis-calibrated the deciles.
        transformer_weights={"groups": 1.0, "curves": CURVE_WEIGHT, "ratios": CURVE_WEIGHT, "numbers": 1.0},
    )


def build_model(checklists: Checklists) -> Pipeline:
    return Pipeline([("columns", build_columns(checklists)), ("glm", PoissonRegressor(solver="newton-cholesky"))])


def predict(model: Pipeline, frame: pd.DataFrame) -> np.ndarray:
    """`model.predict(frame)`, one transformer's columns at a time: the GLM's linear predictor is the sum of each
    block of columns times its coefficients, so the design matrix of every row is never built whole (at 1 M SKUs
    480 MB; a prediction took 1.6-1.9 s of CPU whole, 0.6 s by blocks). The same predictions to 1e-14.

    A standardised block is not built at all: (x - mean) / scale times a coefficient is x times the coefficient
    over the scale, less a constant, added column by column from the frame's own memory (at 1 M SKUs its
    29 columns were copied twice to be scaled: 0.67 s of a 0.87 s prediction)."""
    columns, glm = model.named_steps["columns"], model.named_steps["glm"]
    link = np.full(len(frame), glm.intercept_)
    start = 0
    for name, transformer, selected in columns.transformers_:
        if transformer == "drop":
            continue
        weight = columns.transformer_weights[name]
        if isinstance(transformer, StandardScaler) and transformer.with_mean and transformer.with_std:
            per_unit = glm.coef_[start : start + len(selected)] * weight / transformer.scale_
            link -= transformer.mean_ @ per_unit
            for column, factor in zip(selected, per_unit, strict=True):
                link += frame[column].to_numpy() * factor
            start += len(selected)
            continue
        block = transformer.transform(frame[selected]) * weight
        link += block @ glm.coef_[start : start + block.shape[1]]
        start += block.shape[1]
    assert start == len(glm.coef_), "every coefficient has its column"
    return np.exp(link)


def top_decile_capture(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Share of the actual return inquiries that fall on the 10 % of SKUs ranked riskiest."""
    top = np.argsort(-predicted, kind="stable")[: max(1, int(np.ceil(len(predicted) / 10)))]
    total = actual.sum()
    return float(actual[top].sum() / total) if total else 0.0


def calibration(predicted: np.ndarray, actual: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Mean predicted and actual return inquiries per decile of predicted risk (decile 10 = riskiest)."""
    frame = pd.DataFrame({"predicted": predicted, "actual": actual})
    frame["decile"] = pd.qcut(frame["predicted"].rank(method="first"), bins, labels=range(1, bins + 1))
    table = frame.groupby("decile", observed=True).agg(
        skus=("actual", "size"), predicted=("predicted", "mean"), actual=("actual", "mean")
    )
    table["ratio"] = table["actual"] / table["predicted"]
    return table.reset_index()


@dataclass(frozen=True)
class Evaluation:
    train_cutoff: datetime
    test_cutoff: datetime
    holdout: pd.DataFrame  # sku, category, predicted, baseline, actual
    deviance_model: float
    deviance_baseline: float
    capture_model: float
    capture_baseline: float

    def calibration(self) -> pd.DataFrame:
        return calibration(self.holdout["predicted"].to_numpy(), self.holdout["actual"].to_numpy())


def choose_alpha(sample: pd.DataFrame, checklists: Checklists) -> float:
    """The penalty of `ALPHAS` with the lowest mean Poisson deviance over `SEARCH_FOLDS` folds of `sample`.
    Each fold's design matrix is built once, and its GLM is fitted down the path of penalties from the
    strongest, each fit starting from the previous one's coefficients (a Newton step or two instead of a fit
    from zero): the same choice as a grid search refitting the whole pipeline per penalty and fold."""
    path = sorted(ALPHAS, reverse=True)
    deviance = np.zeros(len(path))
    label = sample["label"].to_numpy()
    for train, test in KFold(SEARCH_FOLDS, shuffle=True, random_state=0).split(sample):
        columns = build_columns(checklists).fit(sample.iloc[train])
        x_train, x_test = columns.transform(sample.iloc[train]), columns.transform(sample.iloc[test])
        glm = PoissonRegressor(solver="newton-cholesky", warm_start=True)
        for k, alpha in enumerate(path):
            glm.set_params(alpha=alpha).fit(x_train, label[train])
            predicted = glm.predict(x_test)
            # a penalty too weak for a small sample can fit a column exactly and send a prediction to 0 or past
            # the floats' range: it is no candidate (its deviance is infinite), not an error
            usable = np.all(np.isfinite(predicted) & (predicted > 0))
            deviance[k] += mean_poisson_deviance(label[test], predicted) if usable else np.inf
    return path[int(np.argmin(deviance))]


def _fit(frames: list[pd.DataFrame], checklists: Checklists) -> Pipeline:
    """Fit the model on the rows of `frames`, its regularisation chosen by cross-validation within them (a small
    catalog needs more of it than a large one); the search uses at most `SEARCH_ROWS` rows, the fit `FIT_ROWS`.
    On one BLAS/OpenMP thread: the matrices (rows x ~60) are too narrow for threads to pay, and on a busy machine
    their spinning made the fits several times slower (at 1 M SKUs a 200,000-row fit 8.5 s instead of 1.4 s)."""
    label = sum(int(frame["label"].sum()) for frame in frames)
    if label < MIN_TRAINING_RETURNS:
        raise NotEnoughHistory(
            f"only {label} return inquiries in the training window; the model needs "
            f"{MIN_TRAINING_RETURNS} or more (it learns once the helpdesk history spans 60 days)"
        )
    rows = sum(map(len, frames))
    with threadpool_limits(1):
        alpha = choose_alpha(_sample(frames, min(rows, SEARCH_ROWS)), checklists)
        fitted = _sample(frames, FIT_ROWS) if rows > FIT_ROWS else pd.concat(frames, ignore_index=True)
        return build_model(checklists).set_params(glm__alpha=alpha).fit(fitted, fitted["label"])


def _sample(frames: list[pd.DataFrame], count: int) -> pd.DataFrame:
    """`pd.concat(frames, ignore_index=True).sample(count, random_state=0)` (the same rows in the same order:
    pandas draws them with `RandomState(0).choice`), each column gathered straight into place, without copying
    every row of the frames first or the drawn rows again to order them."""
    if any(not frame.dtypes.equals(frames[0].dtypes) for frame in frames):
        raise ValueError("the frames to sample from differ in their columns or dtypes")
    starts = np.cumsum([0] + [len(frame) for frame in frames])
    drawn = np.random.RandomState(0).choice(starts[-1], size=count, replace=False)
    source = np.searchsorted(starts, drawn, side="right") - 1
    picks = [(source == k, drawn[source == k] - starts[k]) for k in range(len(frames))]
    columns = {}
    for name, dtype in frames[0].dtypes.items():
        column = np.empty(count, dtype=dtype)
        for frame, (placed, rows) in zip(frames, picks, strict=True):
            column[placed] = frame[name].to_numpy()[rows]
        columns[name] = column
    return pd.DataFrame(columns)


@dataclass(frozen=True)
class Cutoffs:
    """The features at the three cutoffs of a run, each built once: now-60d (training), now-30d (held out, then
    training too) and now (scored)."""

    now: datetime
    train: pd.DataFrame
    test: pd.DataFrame
    current: pd.DataFrame


def cutoffs(con: duckdb.DuckDBPyConnection, now: datetime, checklists: Checklists) -> Cutoffs:
    window = window_days(con, now - 2 * HORIZON)
    return Cutoffs(now, *features(con, [now - k * HORIZON for k in (2, 1, 0)], checklists, window))


def evaluate(data: Cutoffs, checklists: Checklists) -> Evaluation:
    """Train at now-60d, test at now-30d (labels: the last 30 days), against the category-mean baseline."""
    train, test = data.train, data.test
    model = _fit([train], checklists)
    predicted = predict(model, test)
    baseline = test["category"].map(train.groupby("category")["label"].mean()).fillna(train["label"].mean())
    baseline = baseline.clip(lower=1e-6).to_numpy()  # the deviance needs a positive prediction
    actual = test["label"].to_numpy()
    holdout = test[["sku", "category"]].assign(predicted=predicted, baseline=baseline, actual=actual)
    return Evaluation(
        data.now - 2 * HORIZON,
        data.now - HORIZON,
        holdout,
        float(mean_poisson_deviance(actual, predicted)),
        float(mean_poisson_deviance(actual, baseline)),
        top_decile_capture(predicted, actual),
        top_decile_capture(baseline, actual),
    )


@dataclass(frozen=True)
class Scores:
    ranking: pd.DataFrame  # sku, title, category, supplier_id, predicted, drivers (words; the top only), rank
    coefficients: pd.DataFrame  # category, item, per_dhu (log-rate per 1 DHU), rank (within the category)


def score(data: Cutoffs, checklists: Checklists) -> Scores:
    """Train on both labelled cutoffs, then predict the next 30 days for every SKU, with the segments that
    raise each SKU's risk most compared with the average of its category."""
    model = _fit([data.train, data.test], checklists)
    current = data.current
    names = segments(checklists)
    scaler = model.named_steps["columns"].named_transformers_["numbers"]
    weights = dict(zip(HISTORY_COLUMNS + names, model.named_steps["glm"].coef_[-len(scaler.scale_) :], strict=True))
    per_dhu = {s: weights[s] / scale for s, scale in zip(HISTORY_COLUMNS + names, scaler.scale_, strict=True)}
    coefficients = pd.DataFrame(
        [(s.split(".")[0], s.split(".")[1], per_dhu[s]) for s in names], columns=["category", "item", "per_dhu"]
    )
    coefficients["rank"] = coefficients.groupby("category")["per_dhu"].rank(ascending=False, method="first")
    coefficients = coefficients.astype({"rank": int}).sort_values(["category", "rank"], ignore_index=True)

    predicted = predict(model, current)
    order = np.lexsort((current["sku"].to_numpy(), -predicted))  # riskiest first, then by SKU
    ranking = current[["sku", "title", "category", "supplier_id"]].iloc[order].reset_index(drop=True)
    ranking["predicted"] = predicted[order]
    # Worded only for the published top (at 1 M SKUs the words of every SKU took 5 s); the rest hold None.
    top = current.iloc[order[:PUBLISHED_RISKS]]
    drivers = _drivers(_lift(current, top, names, per_dhu))
    ranking["drivers"] = pd.Series(drivers + [None] * (len(ranking) - len(drivers)), dtype=object)
    ranking["rank"] = np.arange(1, len(ranking) + 1)
    return Scores(ranking, coefficients)


def _lift(current: pd.DataFrame, top: pd.DataFrame, names: list[str], per_dhu: dict[str, float]) -> pd.DataFrame:
    """A segment's part in the risk of each SKU of `top`: its coefficient times how far the SKU's DHU is from
    the mean of its category's SKUs (all of `current`); 0 for the segments of other categories."""
    lift = pd.DataFrame(index=top.index)
    in_category = {category: current["category"] == category for category in {n.split(".")[0] for n in names}}
    for name in names:
        category = name.split(".")[0]
        mean = current.loc[in_category[category], name].mean()
        lift[name] = np.where(top["category"] == category, per_dhu[name] * (top[name] - mean), 0.0)
    return lift


def _drivers(lift: pd.DataFrame) -> list[list[str]]:
    """Per SKU, up to three segments that raise its expected return inquiries by 5 % or more over its
    category's average, in `wording.percent_change`'s words: `sizing +42 %`, `sizing +210 %` (never `x3.1`).
    Formatted a column of words at a time, not per SKU, and only the words shown."""
    values = np.exp(lift.to_numpy())
    order = np.argsort(-values, axis=1)[:, :DRIVERS_SHOWN]
    factors = np.take_along_axis(values, order, axis=1)
    shown = factors >= 1.05  # a prefix of each row, the factors being in descending order
    names = np.array([c.split(".")[1].replace("_", " ") for c in lift.columns])[order[shown]]
    percent = (factors[shown] - 1) * 100
    numbers = np.where(percent >= 10, np.char.mod("%+.0f", percent), np.char.mod("%+.1f", percent))
    words = np.char.add(np.char.add(np.char.add(names, " "), numbers), " %").tolist()  # row after row
    counts = shown.sum(axis=1)
    ends = np.cumsum(counts)
    return [words[start:end] for start, end in zip((ends - counts).tolist(), ends.tolist(), strict=True)]


def last_scored(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """When the model last scored (the WMS clock of that run), if ever."""
    (scored,) = con.execute("SELECT max(scored_at) FROM return_risk_metrics").fetchone()
    return scored


def save(con: duckdb.DuckDBPyConnection, run_id: str, now: datetime, evaluation: Evaluation, scores: Scores) -> None:
    """Keep this run's ranking, driver coefficients, held-out predictions and metrics in the warehouse."""
    con.register("ranking", scores.ranking)
    con.register("coefficients", scores.coefficients)
    con.register("holdout", evaluation.holdout)
    try:
        con.execute("CREATE OR REPLACE TABLE return_risk AS SELECT *, $now::TIMESTAMPTZ AS scored_at FROM ranking",
                    {"now": now})  # fmt: skip
        con.execute("CREATE OR REPLACE TABLE return_risk_drivers AS SELECT * FROM coefficients")
        con.execute("CREATE OR REPLACE TABLE return_risk_holdout AS SELECT * FROM holdout")
        con.execute(
            "INSERT OR REPLACE INTO return_risk_metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, now, evaluation.train_cutoff, evaluation.test_cutoff, len(evaluation.holdout),
             int(evaluation.holdout["actual"].sum()), float(evaluation.holdout["predicted"].sum()),
             evaluation.deviance_model, evaluation.deviance_baseline, evaluation.capture_model,
             evaluation.capture_baseline],
        )  # fmt: skip
    finally:
        for name in ("ranking", "coefficients", "holdout"):
            con.unregister(name)


def publish(store: sqlite3.Connection, scores: Scores, run_id: str, now: datetime) -> int:
    """Replace QA's risk list (the top `PUBLISHED_RISKS`) and the driver table in the app store."""
    top = scores.ranking.head(PUBLISHED_RISKS)
    rows = [
        (int(r.rank), r.sku, r.title, r.category, r.supplier_id, float(r.predicted), orjson.dumps(r.drivers).decode())
        for r in top.itertuples(index=False)
    ]
    drivers = scores.coefficients[["category", "item", "per_dhu", "rank"]].astype(object)
    drivers["per_dhu"] = np.expm1(scores.coefficients["per_dhu"].astype(float))
    with transaction(store):
        store.execute("DELETE FROM return_risk")
        store.executemany("INSERT INTO return_risk VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        store.execute("DELETE FROM risk_drivers")
        store.executemany("INSERT INTO risk_drivers VALUES (?, ?, ?, ?)", drivers.itertuples(index=False, name=None))
        note_publication(store, "return_risk", run_id, iso(now), len(rows))
    return len(rows)
