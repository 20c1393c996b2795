"""The return model's penalty search: a penalty whose fit sends a held-out prediction to 0 (or past the floats'
range) has an infinite deviance and is no candidate; the search does not fail on it (the 300-SKU demo did)."""

import numpy as np
import pandas as pd

from cx_pipeline.quality import returns
from cx_pipeline.quality.checklists import Checklists

CHECKLISTS = Checklists(aql={"critical": 0.0, "major": 1.0, "minor": 2.5}, categories={"toys": {"completeness": ""}})


def sample(first_price: float) -> pd.DataFrame:
    """40 SKUs whose return inquiries follow their (log) price steeply; the first, never returned, priced at
    `first_price`. Each is held out once in the search's folds."""
    rng = np.random.default_rng(0)
    price = rng.normal(size=40)
    frame = pd.DataFrame(
        {
            "category": "toys",
            "supplier_id": "SUP-1",
            "status": "active",
            **{returns.group_number(name): 0 for name in returns.GROUP_COLUMNS},
            "log_lines": rng.normal(size=40),
            "return_ratio": rng.normal(size=40),
            "log_price": price,
            "sold_nothing": 0.0,
            "toys.completeness": 0.0,
            "label": rng.poisson(np.exp(1 + 3 * price)),
        }
    )
    frame.loc[0, ["log_price", "label"]] = [first_price, 0]
    return frame


def test_a_penalty_predicting_zero_for_a_held_out_sku_is_no_candidate():
    far_below = sample(-260.0)  # so far below the others that the weak penalties' fits predict 0 for it
    rest, first = far_below.iloc[1:], far_below.iloc[:1]
    predicted = {
        alpha: returns.build_model(CHECKLISTS).set_params(glm__alpha=alpha).fit(rest, rest["label"]).predict(first)[0]
        for alpha in returns.ALPHAS
    }
    assert [alpha for alpha, value in predicted.items() if value == 0] == [1e-4, 1e-3, 1e-2]
    # the weakest penalty is the best where every prediction is a number; with the first SKU so far below, the
    # weak penalties' deviance is infinite and the best of the others is chosen, without an error
    assert returns.choose_alpha(sample(-150.0), CHECKLISTS) == 1e-4
    assert returns.choose_alpha(far_below, CHECKLISTS) == 0.1
