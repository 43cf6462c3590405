"""benchmarks/prior_goals.py: goal centroids and where samples land, on hand-made embeddings."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "prior_goals", Path(__file__).resolve().parents[1] / "benchmarks" / "prior_goals.py")
pg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pg)


def test_centroids_are_unit_means_per_goal():
    visual = np.array([[2.0, 0, 0], [0, 3.0, 0], [0, 0, 1.0], [0, 0, 5.0]])
    names, cents = pg.centroids(visual, ["wood", "wood", "cow", "cow"])
    assert names == ["cow", "wood"]
    np.testing.assert_allclose(cents[0], [0, 0, 1])  # both cow clips point the same way
    np.testing.assert_allclose(cents[1], [2 ** -0.5, 2 ** -0.5, 0])  # wood: the unit clips' mean, unit length


def test_landing_counts_nearest_centroid_and_cosines():
    names = ["cow", "wood"]
    cents = np.array([[1.0, 0.0], [0.0, 1.0]])
    samples = np.array([[3.0, 0.1], [0.2, 1.0], [1.0, 0.0]])  # two land on cow, one on wood
    out = pg.landing(samples, names, cents, "cow")
    assert out["own_share"] == pytest.approx(2 / 3)
    assert out["lands_on"] == {"cow": 2, "wood": 1} and out["closest_other"] == "wood"
    cos = pg.unit(samples) @ cents.T
    assert out["cos_own"] == pytest.approx(cos[:, 0].mean())
    assert out["cos_best_other"] == pytest.approx(cos[:, 1].mean())
    assert pg.landing(samples, names, cents, "wood")["own_share"] == pytest.approx(1 / 3)


def test_phrasings_add_the_heldout_ones_and_the_summary_splits_by_kind():
    from steve1_ray.world.phrases import HELDOUT

    rows = pg.phrasings(heldout=False)
    assert [(k, g) for k, g, _ in rows] == [("caption", g) for g in pg.PROMPTS]
    rows = pg.phrasings(heldout=True)
    assert len(rows) == len(pg.PROMPTS) + sum(len(HELDOUT[g]) for g in pg.PROMPTS)
    assert {p for k, g, p in rows if k == "heldout" and g == "eat_cow"} == set(HELDOUT["eat_cow"])
    assert not {p for k, _, p in rows if k == "heldout"} & set(pg.PROMPTS.values())
    out = {p: {"samples": {"own_share": 1.0 if k == "caption" else 0.25}} for k, _, p in rows}
    assert pg.own_share_summary(out, rows) == {"caption_own_share": 1.0, "heldout_own_share": 0.25}
