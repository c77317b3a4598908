"""Speed defaults (sft_hub/speed.py): each one on by default where the task contract says it applies,
each switch honoured and recorded in run_info.json; length-sorted evaluation gives the metrics and
predictions of unsorted evaluation; image files are checked by their headers, and pixels that do
not decode are found when training reads them (same file-naming error, or skipped and counted).

Tiny models only; no wall-clock asserts (the speed itself is measured by benchmarks/)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sft_hub import speed
from sft_hub.errors import DataError, RecipeError
from sft_hub.training import train

from .conftest import make_text_rows, write_csv
from .contract_fixtures import image_classification_timm, token_classification


def _run_info(result) -> dict:
    return json.loads((result.run_dir / "run_info.json").read_text())


class SamplerProbe:
    """A Trainer callback that records the training sampler's and the eval loader's classes."""

    def __init__(self):
        from transformers import TrainerCallback

        probe = self

        class Probe(TrainerCallback):
            def on_train_begin(self, args, state, control, train_dataloader=None, **kw):
                probe.train_sampler = type(train_dataloader.batch_sampler.sampler).__name__
                probe.eval_batch_size = args.per_device_eval_batch_size

        self.callback = Probe()


# -- pure functions ---------------------------------------------------------------------------
def test_choose_eval_batch_size_fits_the_budget_between_floor_and_cap():
    assert speed.choose_eval_batch_size(budget_bytes=1000, per_example_bytes=10, floor=8,
                                        cap=1024) == 64  # 100 fit: largest power of two
    assert speed.choose_eval_batch_size(budget_bytes=1000, per_example_bytes=500, floor=16,
                                        cap=1024) == 16  # never below the training batch
    assert speed.choose_eval_batch_size(budget_bytes=1e12, per_example_bytes=1, floor=8,
                                        cap=128) == 128
    assert speed.choose_eval_batch_size(budget_bytes=1e9, per_example_bytes=0, floor=32,
                                        cap=128) == 32  # no estimate: the training batch


def test_restore_order_undoes_a_sort_for_nested_predictions():
    lengths = [3, 9, 1, 9, 5]
    order = speed.sorted_order(lengths)
    assert order == [1, 3, 4, 0, 2]  # longest first, ties in dataset order
    logits = np.arange(10.0).reshape(5, 2)
    labels = np.array([0, 1, 2, 3, 4])
    sorted_logits, sorted_labels = logits[order], labels[order]
    restored = speed.restore_order((sorted_logits, [sorted_logits]), order)
    assert np.array_equal(restored[0], logits) and np.array_equal(restored[1][0], logits)
    assert np.array_equal(speed.restore_order(sorted_labels, order), labels)
    assert speed.restore_order(None, order) is None


def test_input_lengths_read_from_arrow_follow_a_row_selection():
    from datasets import Dataset

    ds = Dataset.from_dict({"input_ids": [[1] * n for n in (4, 1, 7, 2)], "labels": [0, 1, 0, 1]})
    assert speed.input_lengths(ds, "input_ids") == [4, 1, 7, 2]
    assert speed.input_lengths(ds.select([2, 0]), "input_ids") == [7, 4]


def test_length_grouped_sampler_is_seeded_per_epoch_and_groups_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, 800).tolist()
    a, b = (speed.length_grouped_sampler(lengths, 8, seed=3) for _ in range(2))
    first = list(a)
    assert sorted(first) == list(range(800))
    assert list(b) == first  # same seed, same epoch: same batches (resume, every process)
    b.set_epoch(1)
    assert list(b) != first  # a new order each epoch

    def padding(order):
        batches = [order[i:i + 8] for i in range(0, len(order), 8)]
        return sum(max(lengths[j] for j in bt) * len(bt) - sum(lengths[j] for j in bt)
                   for bt in batches)

    assert padding(first) < 0.2 * padding(rng.permutation(800).tolist())


def test_length_groups_cut_a_batch_into_contiguous_slices_that_pad_less():
    lengths = [5, 60, 6, 58, 7, 61, 5, 59]
    groups = speed.length_groups(lengths, slice_cost=0.0)
    assert sorted(i for g in groups for i in g) == list(range(8))  # every row exactly once
    longest = [max(lengths[i] for i in g) for g in groups]
    assert longest == sorted(longest, reverse=True)  # slices follow the lengths
    padded = sum(len(g) * m for g, m in zip(groups, longest))
    assert padded < 0.6 * len(lengths) * max(lengths)
    # two clear clusters: with a price on each extra slice, exactly the two clusters
    assert [sorted(g) for g in speed.length_groups(lengths, slice_cost=20)] == [[1, 3, 5, 7],
                                                                              [0, 2, 4, 6]]
    assert speed.length_groups([9] * 6, slice_cost=1) == [list(range(6))]  # nothing to gain
    assert speed.length_groups(lengths, slice_cost=1e9) == [speed.sorted_order(lengths)]


def _padded_batch(per_token: bool, left: bool = False, rows: int = 12, width: int = 30):
    import torch

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, width + 1, (rows,), generator=g)
    lengths[0] = width
    positions = torch.arange(width)[None]
    mask = ((positions >= width - lengths[:, None]) if left
            else (positions < lengths[:, None])).long()
    ids = torch.randint(5, 100, (rows, width), generator=g) * mask
    if per_token:
        labels = torch.randint(0, 3, (rows, width), generator=g).masked_fill(mask == 0, -100)
        labels[1] = -100  # a row that scores nothing
    else:
        labels = torch.randint(0, 3, (rows,), generator=g)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": labels}


@pytest.mark.parametrize("per_token", [False, True])
def test_length_slices_give_the_gradient_of_the_padded_batch(per_token):
    """The slices' weighted losses are the batch's mean loss, with its gradient (no dropout)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

    cls = BertForTokenClassification if per_token else BertForSequenceClassification
    torch.manual_seed(0)
    model = cls(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, num_labels=3,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    batch = _padded_batch(per_token)
    whole = model(**batch).loss
    whole.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    slices = speed.length_slices(batch, labels_per_token=per_token, slice_cost=0.02)
    assert slices is not None and len(slices) >= 2
    def unpadded(ids):
        return sorted(tuple(row[row > 0].tolist()) for row in ids)

    kept = sorted(r for part, _, _ in slices for r in unpadded(part["input_ids"]))
    if per_token:  # a slice that scores nothing may be left out; nothing else is
        assert set(kept) <= set(unpadded(batch["input_ids"])) and len(kept) >= 11
    else:
        assert kept == unpadded(batch["input_ids"])  # every row once, whole
    assert sum(tokens for _, _, tokens in slices) < batch["attention_mask"].numel()
    if per_token:  # scored items are labelled tokens
        assert sum(items for _, items, _ in slices) == int((batch["labels"] != -100).sum())
        assert all(part["labels"].shape == part["input_ids"].shape for part, _, _ in slices)
    total = sum(items for _, items, _ in slices)
    loss = sum(model(**part).loss * (items / total) for part, items, _ in slices)
    assert float(loss.detach()) == pytest.approx(float(whole.detach()), rel=1e-5)
    loss.backward()
    for got, want in zip((p.grad for p in model.parameters()), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_length_slices_leave_alone_what_they_cannot_cut():
    import torch

    batch = _padded_batch(False)
    assert speed.length_slices({k: v for k, v in batch.items() if k != "attention_mask"},
                               labels_per_token=False) is None  # no mask: lengths unknown
    left = _padded_batch(False, left=True)  # cutting left padding would move BERT's positions
    assert speed.length_slices(left, labels_per_token=False) is None
    holes = {**batch, "attention_mask": batch["attention_mask"].clone()}
    holes["attention_mask"][0, 1] = 0  # a row with a hole: cutting to its length drops a token
    assert speed.length_slices(holes, labels_per_token=False) is None
    assert speed.packed_batch({**holes, "labels": holes["input_ids"]}) is None
    same = {k: v[:, :10] if v.dim() == 2 else v for k, v in batch.items()}
    same["attention_mask"] = torch.ones_like(same["attention_mask"])
    assert speed.length_slices(same, labels_per_token=False) is None  # nothing to gain


def _tiny_token_model(kind: str = "bert", **config):
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification

    torch.manual_seed(0)
    settings = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, num_labels=3, max_position_embeddings=64,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return AutoModelForTokenClassification.from_config(
        AutoConfig.for_model(kind, **{**settings, **config}))


def test_packed_batch_gives_the_loss_and_gradient_of_the_padded_batch():
    """Rows laid end to end, each attending to itself with its own positions: the padded batch's
    labelled tokens once each, its loss and its gradient, from fewer tokens in one pass."""
    import torch

    model = _tiny_token_model()
    batch = _padded_batch(True)
    whole = model(**batch).loss
    whole.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    check = speed.check_packing(model, batch)
    assert check["ok"] is True and check["position_start"] == 0
    assert model.training  # the check runs in eval mode and puts the mode back
    packed, where, tokens = speed.packed_batch(batch, position_start=0, mask=check["mask"])
    assert tokens == packed["input_ids"].numel() < batch["attention_mask"].numel()
    real = where >= 0
    assert sorted(where[real].tolist()) == sorted(
        (batch["attention_mask"].reshape(-1) == 1).nonzero().reshape(-1).tolist())  # each once
    labels = batch["labels"].reshape(-1)
    assert torch.equal(packed["labels"][real], labels[where[real]])
    assert bool((packed["labels"][~real] == -100).all())  # padding scores nothing
    assert packed["attention_mask"].shape == (len(packed["input_ids"]), 1, tokens // len(
        packed["input_ids"]), tokens // len(packed["input_ids"]))
    loss = model(**packed).loss
    assert float(loss.detach()) == pytest.approx(float(whole.detach()), rel=1e-5)
    loss.backward()
    for got, want in zip((p.grad for p in model.parameters()), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_pack_rows_fills_bins_first_fit_longest_first():
    assert speed.pack_rows([20, 5, 12, 3, 17, 9], 20) == [[0], [4, 3], [2, 1], [5]]
    bins = speed.pack_rows([30, 2, 2, 2], 10)  # a row longer than a bin gets one of its own
    assert bins == [[0], [1, 2, 3]]


def test_pack_layout_picks_the_bin_capacity_that_computes_fewest_tokens():
    lengths = [20, 5, 12, 3, 17, 9]  # 66 tokens; padded: 6 x 20 = 120
    tokens, width, bins = speed.pack_layout(lengths, max_width=40)
    assert sorted(i for b in bins for i in b) == list(range(6))  # every row exactly once
    assert width == max(sum(lengths[i] for i in b) for b in bins) <= 40
    assert tokens == len(bins) * width == 68  # two bins of 34 (65, 66 and 67 cannot be reached)
    assert speed.pack_layout(lengths, max_width=33)[:2] == (69, 23)  # three bins of 23
    assert speed.pack_layout(lengths, max_width=20)[:2] == (80, 20)  # 4 bins of the longest row
    assert speed.pack_layout([50, 50], max_width=20)[:2] == (100, 50)  # never below the longest


def test_packing_check_finds_each_models_positions_and_refuses_what_would_change():
    batch = _padded_batch(True)
    # RoBERTa numbers positions from pad_token_id + 1: the check finds that numbering
    roberta = _tiny_token_model("roberta", pad_token_id=1)
    batch_r = {**batch, "input_ids": batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 1)}
    check = speed.check_packing(roberta, batch_r)
    assert check["ok"] is True and check["position_start"] == 2
    # eager attention adds the mask to its scores: the additive mask is the one it reads
    eager = _tiny_token_model(attn_implementation="eager")
    assert speed.check_packing(eager, batch)["mask"] == "additive"
    # DeBERTa-v2's relative attention cannot take a block mask: refused, and why
    deberta = _tiny_token_model("deberta-v2", attn_implementation="eager")
    check = speed.check_packing(deberta, batch)
    assert check["ok"] is False and "positions from 0" in check["why"]
    # a batch that cannot be packed (left padding) decides nothing
    assert speed.check_packing(_tiny_token_model(), _padded_batch(True, left=True))["ok"] is None
    assert speed.packed_batch(_padded_batch(False)) is None  # one label per row: not per token


def test_default_workers_leave_a_core_for_the_training_loop():
    assert speed.default_workers(16) == 8  # capped
    assert speed.default_workers(16, processes=4) == 3
    assert speed.default_workers(2) == 1
    assert speed.default_workers(1) == 1


def test_gpu_figures_peak_flops_and_mfu():
    assert speed.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert speed.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert speed.peak_bf16_flops("NVIDIA H200") == 989e12
    assert speed.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert speed.peak_bf16_flops("NVIDIA L4") == 121e12
    assert speed.peak_bf16_flops("NVIDIA L40S") == 362e12
    assert speed.peak_bf16_flops("Some Future Accelerator") is None
    assert speed.training_flops(1_000_000, 2_000) == 1.2e10
    assert speed.inference_flops(1_000_000, 2_000) == 4e9
    assert speed.mfu(speed.training_flops(10**9, 10**5), 1.0, 989e12) == pytest.approx(0.6067, 1e-3)
    assert speed.mfu(1e12, 1.0, None) is None


# -- text: defaults on, switches honoured, recorded ---------------------------------------------
def _varied_text_dir(root: Path) -> Path:
    """Messages of 1 to 12 words, so that sorting and grouping change the batches."""
    d = root / "varied"
    for split, n, seed in (("train", 48, 1), ("validation", 30, 2), ("test", 25, 3)):
        rows = make_text_rows(n, seed=seed)
        for i, row in enumerate(rows):
            row["text"] = " ".join([row["text"]] * (1 + i % 3))[: 5 + (i * 7) % 60]
        write_csv(d / f"{split}.csv", rows)
    return d


@pytest.fixture
def varied_recipe(text_recipe, tmp_path):
    d = _varied_text_dir(tmp_path)
    text_recipe["data"]["files"] = {s: str(d / f"{s}.csv") for s in ("train", "validation", "test")}
    text_recipe["data"]["max_length"] = 32
    text_recipe["training"]["num_train_epochs"] = 1
    return text_recipe


def test_text_defaults_are_on_and_recorded(varied_recipe, write_recipe):
    probe = SamplerProbe()
    result = train(write_recipe(varied_recipe), callbacks=[probe.callback])
    facts = _run_info(result)["speed"]
    # sorted evaluation is a default; length-grouped training batches are not (they cost SST-2
    # accuracy in every seed measured): the task's contract says so, and the run records why
    assert facts["group_by_length"] is False and facts["sort_eval_by_length"] is True
    assert "contract" in facts["why"]["group_by_length"]
    assert facts["length_feature"] == "input_ids"
    assert probe.train_sampler != "EpochSeededLengthGroupedSampler"
    assert facts["per_device_eval_batch_size"] == probe.eval_batch_size >= 8
    assert facts["why"]["per_device_eval_batch_size"].startswith("default: chosen for cpu")
    assert facts["channels_last"] is False and facts["dataloader_num_workers"] == 0
    # on CPU each training batch runs as slices of similar length: fewer tokens computed (packing
    # would merge the rows whose first token the head reads)
    assert facts["pack_batches"] is False and "one output per row" in facts["why"]["pack_batches"]
    assert facts["split_batches_by_length"] is True
    counts = facts["split_counts"]
    assert counts["batches"] == 6 and counts["split"] >= 1
    assert counts["computed_tokens"] < counts["padded_tokens"]


@pytest.fixture
def dropout_free_bert(tiny_bert_dir, tmp_path) -> Path:
    """The tiny BERT without dropout: two runs from one seed train identically."""
    import shutil

    from transformers import AutoConfig

    out = tmp_path / "bert-no-dropout"
    shutil.copytree(tiny_bert_dir, out)
    config = AutoConfig.from_pretrained(out)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(out)
    return out


def test_length_split_steps_train_exactly_like_whole_batches(varied_recipe, write_recipe,
                                                             dropout_free_bert):
    """Same seed, split and unsplit steps: the same training (losses and metrics), fewer tokens."""
    varied_recipe["model"]["path"] = str(dropout_free_bert)
    varied_recipe["training"].update(logging_steps=1, eval_strategy="no", save_strategy="no",
                                     load_best_model_at_end=False)
    split = train(write_recipe(varied_recipe), ["output.dir=run-split"])
    plain = train(write_recipe(varied_recipe), ["output.dir=run-plain",
                                                "training.split_batches_by_length=false"])
    on, off = _run_info(split)["speed"], _run_info(plain)["speed"]
    assert on["split_batches_by_length"] and on["split_counts"]["split"] >= 1
    assert not off["split_batches_by_length"] and off["split_counts"]["split"] == 0
    assert off["why"]["split_batches_by_length"] == "recipe: split_batches_by_length false"

    def losses(result):
        state = json.loads((result.run_dir / "trainer_state.json").read_text())
        return [e["loss"] for e in state["log_history"] if "loss" in e]

    assert len(losses(plain)) == 6  # one per step
    assert losses(split) == pytest.approx(losses(plain), rel=1e-4)
    for key, value in plain.metrics["test"].items():
        if "runtime" not in key and "per_second" not in key:
            assert split.metrics["test"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


@pytest.fixture
def varied_ner_recipe(dropout_free_bert, tmp_path) -> dict:
    """NER on sentences of 1 to 14 words (the dropout-free tiny BERT): batches that pad a lot."""
    words = ["good", "movie", "paris", "bad", "film", "york", "plot", "fine", "google", "not"]
    rows = []
    for i in range(40):
        tokens = [words[(i * 7 + k * 3) % len(words)] for k in range(1 + (i * 5) % 14)]
        rows.append({"tokens": tokens,
                     "ner_tags": ["B-LOC" if w in ("paris", "york") else
                                  "B-ORG" if w == "google" else "O" for w in tokens]})
    files = {}
    for split, part in (("train", rows[:32]), ("validation", rows[32:]), ("test", rows[32:])):
        path = tmp_path / "ner" / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
        files[split] = str(path)
    return {"task": "token-classification", "model": {"name": str(dropout_free_bert)},
            "data": {"files": files, "max_length": 32},
            "training": {"num_train_epochs": 1, "per_device_train_batch_size": 8,
                         "logging_steps": 1, "eval_strategy": "no", "save_strategy": "no",
                         "load_best_model_at_end": False, "disable_tqdm": True}}


def _losses(result) -> list[float]:
    state = json.loads((result.run_dir / "trainer_state.json").read_text())
    return [e["loss"] for e in state["log_history"] if "loss" in e]


def test_packed_ner_steps_train_exactly_like_padded_batches(varied_ner_recipe, write_recipe):
    """NER's default on CPU: each batch packed end to end, checked on the first batch; the same
    losses and metrics as padded batches from the same seed, from fewer tokens."""
    packed = train(write_recipe(varied_ner_recipe), ["output.dir=run-packed"])
    plain = train(write_recipe(varied_ner_recipe), ["output.dir=run-plain",
                                                    "training.pack_batches=false",
                                                    "training.split_batches_by_length=false"])
    on, off = _run_info(packed)["speed"], _run_info(plain)["speed"]
    assert on["pack_batches"] is True and on["why"]["pack_batches"].startswith("default")
    assert on["pack_check"]["ok"] is True and on["pack_check"]["position_start"] == 0
    counts = on["split_counts"]
    assert counts["batches"] == 4 and counts["packed"] >= 3
    assert counts["computed_tokens"] < 0.8 * counts["padded_tokens"]
    assert not off["pack_batches"] and off["why"]["pack_batches"] == "recipe: pack_batches false"
    assert off["split_counts"]["packed"] == 0
    assert len(_losses(plain)) == 4
    assert _losses(packed) == pytest.approx(_losses(plain), rel=1e-4)
    for key, value in plain.metrics["test"].items():
        if "runtime" not in key and "per_second" not in key:
            assert packed.metrics["test"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_a_model_that_packing_would_change_falls_back_to_length_split_steps(
        varied_ner_recipe, write_recipe, dropout_free_bert, tmp_path):
    """DeBERTa-v2's relative attention cannot take a block mask: the first batch's check says so,
    the run trains on length-split steps instead and run_info.json records why."""
    import shutil

    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2ForTokenClassification

    out = tmp_path / "tiny-deberta"
    shutil.copytree(dropout_free_bert, out)
    (out / "model.safetensors").unlink()
    vocab = AutoTokenizer.from_pretrained(out).vocab_size
    DebertaV2ForTokenClassification(DebertaV2Config(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=3)).save_pretrained(out)
    varied_ner_recipe["model"]["name"] = str(out)
    result = train(write_recipe(varied_ner_recipe))
    facts = _run_info(result)["speed"]
    assert facts["pack_batches"] is False and facts["pack_check"]["ok"] is False
    assert facts["why"]["pack_batches"].startswith("off: packed rows changed this model's outputs")
    assert facts["split_batches_by_length"] and facts["split_counts"]["split"] >= 1
    assert facts["split_counts"]["packed"] == 0 and len(_losses(result)) == 4


def test_packing_is_refused_for_a_task_with_one_output_per_row(varied_recipe, write_recipe):
    with pytest.raises(RecipeError, match="one output per row") as err:
        train(write_recipe(varied_recipe), ["training.pack_batches=true"])
    assert err.value.field == "training.pack_batches"


def test_length_grouped_training_batches_are_one_recipe_line_away(varied_recipe, write_recipe):
    probe = SamplerProbe()
    result = train(write_recipe(varied_recipe),
                   ["training.train_sampling_strategy=group_by_length"], callbacks=[probe.callback])
    facts = _run_info(result)["speed"]
    assert facts["group_by_length"] is True
    assert facts["why"]["group_by_length"] == "recipe: train_sampling_strategy group_by_length"
    assert probe.train_sampler == "EpochSeededLengthGroupedSampler"


def test_text_switches_are_honoured_and_recorded(varied_recipe, write_recipe):
    probe = SamplerProbe()
    result = train(write_recipe(varied_recipe), [
        "training.train_sampling_strategy=random", "training.sort_eval_by_length=false",
        "training.per_device_eval_batch_size=5"], callbacks=[probe.callback])
    facts = _run_info(result)["speed"]
    assert facts["group_by_length"] is False and facts["sort_eval_by_length"] is False
    assert facts["why"]["group_by_length"] == "recipe: train_sampling_strategy random"
    assert facts["per_device_eval_batch_size"] == probe.eval_batch_size == 5
    assert facts["why"]["per_device_eval_batch_size"] == "recipe"
    assert probe.train_sampler != "EpochSeededLengthGroupedSampler"


def test_speed_defaults_false_turns_every_default_off(varied_recipe, write_recipe):
    result = train(write_recipe(varied_recipe), ["training.speed_defaults=false"])
    facts = _run_info(result)["speed"]
    assert not facts["group_by_length"] and not facts["sort_eval_by_length"]
    assert not facts["split_batches_by_length"] and not facts["pack_batches"]
    assert facts["per_device_eval_batch_size"] == 64  # sft-hub's fixed default (TRAINING_DEFAULTS)
    assert all("speed_defaults: false" in facts["why"][k]
               for k in ("group_by_length", "sort_eval_by_length", "split_batches_by_length",
                         "pack_batches",
                         "per_device_eval_batch_size"))


def test_sorted_evaluation_gives_the_metrics_of_unsorted_evaluation(varied_recipe, write_recipe):
    """Same training (random batches in both), evaluation sorted or not: every metric the same."""
    common = ["training.train_sampling_strategy=random", "training.per_device_eval_batch_size=4"]
    on = train(write_recipe(varied_recipe), common + ["output.dir=run-on"])
    off = train(write_recipe(varied_recipe),
                common + ["output.dir=run-off", "training.sort_eval_by_length=false"])
    assert _run_info(on)["speed"]["sort_eval_by_length"] is True
    for split in ("validation", "test"):
        a, b = on.metrics[split], off.metrics[split]
        assert set(a) == set(b)
        for key in a:
            if key in ("loss",):
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6)
            elif "runtime" not in key and "per_second" not in key:
                assert a[key] == b[key], (split, key)


def test_sorted_predict_returns_predictions_in_dataset_order(tiny_bert_dir, tmp_path):
    """predict() with and without sorting: the same logits row by row, labels in dataset order."""
    import torch
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, Trainer, TrainingArguments)

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = [" ".join(["win free prize"] * (1 + i % 5))[: 4 + 3 * i] for i in range(23)]
    ds = Dataset.from_dict({**tok(texts, truncation=True, max_length=40),
                            "labels": [i % 2 for i in range(23)]})
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()

    class T(speed.SpeedTrainerMixin, Trainer):
        pass

    def run(sort: bool):
        args = TrainingArguments(output_dir=str(tmp_path / "t"), per_device_eval_batch_size=4,
                                 report_to="none", use_cpu=True)
        trainer = T(model=model, args=args, data_collator=DataCollatorWithPadding(tok),
                    compute_metrics=lambda p: {"first_label": float(p.label_ids[0]),
                                               "acc": float((p.predictions.argmax(-1)
                                                             == p.label_ids).mean())})
        trainer.speed = speed.SpeedPlan(sort_eval_by_length=sort, length_feature="input_ids")
        return trainer.predict(ds)

    plain, ordered = run(False), run(True)
    assert np.array_equal(ordered.label_ids, np.array(ds["labels"]))
    np.testing.assert_allclose(ordered.predictions, plain.predictions, rtol=1e-5, atol=1e-6)
    assert ordered.metrics["test_acc"] == plain.metrics["test_acc"]
    assert ordered.metrics["test_first_label"] == 0.0  # compute_metrics saw dataset order


# -- token and image tasks --------------------------------------------------------------------
def test_token_classification_sorts_evaluation_but_trains_on_random_batches(tmp_path, write_recipe):
    """Length-grouped training batches cost NER its quality (WNUT17: entity F1 0.22 -> 0.00), so
    its contract leaves them off; evaluation is still sorted (metrics unchanged)."""
    fixture = token_classification(tmp_path)
    recipe = {**fixture.recipe, "training": {"num_train_epochs": 1, "per_device_train_batch_size": 4,
                                             "disable_tqdm": True},
              "output": {"dir": str(tmp_path / "run")}}
    result = train(write_recipe(recipe))
    facts = _run_info(result)["speed"]
    assert not facts["group_by_length"] and facts["sort_eval_by_length"]
    assert "contract" in facts["why"]["group_by_length"]
    assert facts["length_feature"] == "input_ids"
    assert facts["split_batches_by_length"] and facts["labels_per_token"]  # labels cut with inputs
    assert facts["split_counts"]["batches"] >= 1


def _timm_recipe(tmp_path):
    fixture = image_classification_timm(tmp_path)
    return {**fixture.recipe, "training": {"num_train_epochs": 1, "per_device_train_batch_size": 3,
                                           "disable_tqdm": True},
            "output": {"dir": str(tmp_path / "run")}}


def test_image_defaults_and_channels_last_switch(tmp_path, write_recipe):
    recipe = _timm_recipe(tmp_path)
    result = train(write_recipe(recipe), ["training.channels_last=true"])
    facts = _run_info(result)["speed"]
    assert not facts["group_by_length"] and not facts["sort_eval_by_length"]
    assert facts["why"]["group_by_length"] == "the task's inputs have no length"
    assert facts["channels_last"] is True and facts["why"]["channels_last"].startswith("recipe")
    assert facts["dataloader_num_workers"] == 0  # CPU
    assert (result.run_dir / "model.safetensors").is_file()  # saved in the standard layout
    default = train(write_recipe(recipe), ["output.dir=run2"])
    facts = _run_info(default)["speed"]
    assert facts["channels_last"] is True  # convolutions on CPU: oneDNN's layout, on by default
    assert facts["why"]["channels_last"].startswith("default: convolutional model on cpu")
    off = train(write_recipe(recipe), ["output.dir=run3", "training.channels_last=false"])
    assert _run_info(off)["speed"]["channels_last"] is False
    # the saved weights do not depend on the training layout
    from safetensors.torch import load_file

    for run in (default, off):
        assert all(t.is_contiguous() for t in load_file(run.run_dir / "model.safetensors").values())


@pytest.mark.parametrize("override", ["training.sort_eval_by_length=true",
                                      "training.split_batches_by_length=true",
                                      "training.train_sampling_strategy=group_by_length"])
def test_length_defaults_asked_of_an_image_task_are_refused(tmp_path, write_recipe, override):
    with pytest.raises(RecipeError, match="no length") as err:
        train(write_recipe(_timm_recipe(tmp_path)), [override])
    assert err.value.field == "training." + override.split("=")[0].split(".")[1]


def test_cuda_budget_leaves_room_for_the_training_state():
    import torch

    model = torch.nn.Linear(1000, 1000)  # 1,001,000 parameters, all trainable
    assert speed.model_state_bytes(model) == 16 * 1_001_000
    model.weight.requires_grad_(False)
    assert speed.model_state_bytes(model) == 4 * 1_001_000 + 12 * 1000


# -- images: headers up front, pixels when read -------------------------------------------------
def _truncate(folder: Path) -> Path:
    """A PNG whose header is sound but whose pixel data is cut off."""
    from PIL import Image

    bad = folder / "dark" / "truncated.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(bad)
    bad.write_bytes(bad.read_bytes()[:60])
    return bad


def test_header_check_flags_non_images_but_not_truncated_pixels(tmp_path):
    from PIL import Image

    from sft_hub.data.images import check_image_header

    good = tmp_path / "ok.png"
    Image.new("RGB", (8, 8)).save(good)
    check_image_header(str(good))
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:40])
    check_image_header(str(truncated))  # header intact: found when decoded
    for name, data in (("empty.png", b""), ("text.png", b"not an image"),
                       ("fake.png", b"\x89PNG\r\n\x1a\n not really")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match="cannot read image") as err:
            check_image_header(str(tmp_path / name))
        assert err.value.file == str(tmp_path / name) and "skip_bad_images" in err.value.hint
    with pytest.raises(DataError):
        check_image_header({"path": str(tmp_path / "missing.png"), "bytes": None})


def test_training_headers_are_checked_beside_training_and_fail_at_the_next_batch(tmp_path):
    """The training split's headers are checked in a background thread (the first step does
    not wait for 20,000 file reads); its first finding fails the run at the next batch, with the
    up-front check's file-naming error."""
    from PIL import Image

    from sft_hub.data.images import BackgroundHeaderCheck, BadImages, ImageProblems

    files = []
    for i in range(300):
        path = tmp_path / f"{i:03d}.png"
        Image.new("RGB", (4, 4)).save(path)
        files.append(str(path))
    (tmp_path / "150.png").write_bytes(b"")  # empty: its header says so
    check = BackgroundHeaderCheck(files, "train")
    problems = ImageProblems(BadImages(), skip=False, notes=[], checks=[check])
    problems.take({"pixel_values": object()})  # the first step's batch: the check waits for it
    assert not check.wait(0.2)
    problems.take({"pixel_values": object()})  # batch 2 starts it
    assert check.wait(60)
    with pytest.raises(DataError, match="cannot read image: the file is empty") as err:
        problems.take({"pixel_values": object()})
    assert err.value.file == str(tmp_path / "150.png") and "skip_bad_images" in err.value.hint
    fine = BackgroundHeaderCheck(files[:100], "train")
    fine.start()
    assert fine.wait(60) and fine.problem is None
    batch = {"pixel_values": 1}
    assert ImageProblems(BadImages(), skip=False, notes=[], checks=[fine]).take(batch) is batch


@pytest.mark.parametrize("workers", [0, 1])
def test_pixels_that_fail_during_training_name_the_file(tmp_path, write_recipe, workers):
    recipe = _timm_recipe(tmp_path)
    bad = _truncate(tmp_path / "images")
    with pytest.raises(DataError) as err:
        train(write_recipe(recipe), [f"training.dataloader_num_workers={workers}"])
    assert err.value.file == str(bad.resolve())
    assert err.value.message.startswith("cannot read image")
    assert "Traceback" not in str(err.value)  # raised on the main process, not a worker dump
    assert not (tmp_path / "run" / "run_info.json").exists()


def test_pixels_that_fail_during_training_are_skipped_and_counted(tmp_path, write_recipe):
    recipe = _timm_recipe(tmp_path)
    recipe["data"]["skip_bad_images"] = True
    recipe["training"]["num_train_epochs"] = 2
    _truncate(tmp_path / "images")
    result = train(write_recipe(recipe))
    notes = _run_info(result)["notes"]
    assert any("skipped 1 unreadable image" in n and "truncated.png" in n for n in notes), notes
