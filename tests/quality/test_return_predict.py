"""The return model's own shortcuts against the libraries they stand in for: the prediction by blocks equals the
fitted pipeline's `predict`, and the sample of several frames equals pandas' sample of their concatenation."""

import numpy as np
import pandas as pd

from cx_pipeline.quality import returns
from cx_pipeline.quality.checklists import Checklists

CHECKLISTS = Checklists(
    aql={"critical": 0.0, "major": 1.0, "minor": 2.5},
    categories={"toys": {"completeness": ""}, "apparel": {"sizing": "", "stitching": ""}},
)


def frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    groups = {
        "category": rng.choice(["toys", "apparel"], rows),
        "supplier_id": rng.choice(["SUP-1", "SUP-2", "SUP-3"], rows),
        "status": rng.choice(["active", "draft"], rows),
    }
    data = pd.DataFrame(
        {
            "sku": [f"SKU-{seed}-{i}" for i in range(rows)],
            **groups,
            **{returns.group_number(name): pd.factorize(values, sort=True)[0] for name, values in groups.items()},
            "log_price": rng.normal(3, 1, rows),
            "log_lines": np.log1p(rng.poisson(5, rows)),
            "sold_nothing": rng.integers(0, 2, rows).astype(float),
            "return_ratio": rng.normal(0, 0.5, rows),
            **{name: rng.gamma(2, 1, rows) for name in returns.segments(CHECKLISTS)},
        }
    )
    return data.assign(label=rng.poisson(np.exp(0.3 * data["log_price"] - 1)))


def test_the_prediction_by_blocks_is_the_pipelines_own():
    train = frame(400, 1)
    model = returns.build_model(CHECKLISTS).set_params(glm__alpha=0.01).fit(train, train["label"])
    scored = frame(300, 2)
    np.testing.assert_allclose(returns.predict(model, scored), model.predict(scored), rtol=1e-12)


def test_a_sample_of_several_frames_is_pandas_sample_of_them_joined():
    frames = [frame(120, 3), frame(80, 4)]
    expected = pd.concat(frames, ignore_index=True).sample(150, random_state=0).reset_index(drop=True)
    pd.testing.assert_frame_equal(returns._sample(frames, 150), expected, check_exact=True)
