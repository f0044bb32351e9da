import math

import pytest
import torch
from ignite.engine import Engine

from monai_ext.engines.metrics import PerDomainMeanDice, dice_per_class, write_metrics_table


def test_dice_per_class_ignores_absent_classes():
    label = torch.tensor([0, 1, 1, 2, 2, 2])
    pred = torch.tensor([0, 1, 0, 2, 2, 1])
    d = dice_per_class(pred, label, [1, 2, 3])
    assert d[0] == pytest.approx(2 * 1 / (2 + 2)) and d[1] == pytest.approx(2 * 2 / (2 + 3)) and math.isnan(d[2])


def test_each_sample_is_scored_on_its_own_classes_and_datasets_count_once(tmp_path):
    metric = PerDomainMeanDice(["a", "b"], [2, 3])
    # batches as MONAI leaves them after decollation: lists of per-sample dicts
    perfect_a = torch.tensor([[0, 1, 1, 0]])
    half_b = torch.tensor([[1, 2, 2, 0]])
    pred_b = torch.tensor([[1, 2, 0, 0]])
    steps = [
        ([{"pred": perfect_a, "label": perfect_a}], [{"domain": 0}]),
        ([{"pred": perfect_a, "label": perfect_a}], [{"domain": 0}]),
        # class 2 of dataset b predicted where dataset a has no class 2: only b's own classes count
        ([{"pred": pred_b, "label": half_b}], [{"domain": torch.tensor(1)}]),
    ]
    def process(e, batch):
        out, items = batch
        e.state.batch = items
        return out

    engine = Engine(process)
    metric.attach(engine, "val_mean_dice")
    engine.run(steps, max_epochs=1)
    m = engine.state.metrics
    dice_b = (1.0 + 2 * 1 / (1 + 2)) / 2
    assert m["val_mean_dice_a"] == pytest.approx(1.0)
    assert m["val_mean_dice_b"] == pytest.approx(dice_b)
    assert m["val_mean_dice"] == pytest.approx((1.0 + dice_b) / 2)
    path = write_metrics_table(m, str(tmp_path / "m.csv"))
    assert "val_mean_dice_b" in open(path, encoding="utf-8").read()


def test_out_of_range_domain_is_an_error():
    metric = PerDomainMeanDice(["a"], [2])
    with pytest.raises(ValueError, match="out of range"):
        metric.update((torch.zeros(1, 4), torch.zeros(1, 4), 3))
