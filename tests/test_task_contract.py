"""Every registered task declares its contract, and the usage snippet its model card shows runs.

Parametrised over the task registry: a new task module is checked without editing this file. The
snippet runs against a tiny model built from the task's own Auto class (random weights, a few
kilobytes), saved with a processor the way a run directory is, and given the task's model-config
keys.
"""
from __future__ import annotations

import json
import shutil

import pytest

from sft_hub.card import usage_snippet
from sft_hub.metrics import Metric
from sft_hub.catalog import load_recipe
from sft_hub.tasks import TASKS

TASK_NAMES = sorted(TASKS.all())
LABELS = ["O", "B-person", "I-person"]  # valid for every task (NER needs a tag scheme)


def make_task(name, write_recipe):
    loaded = load_recipe(write_recipe({"task": name, "model": {"name": "org/tiny"},
                                       "data": {"dataset": "org/data"}}))
    task = TASKS.all()[name](loaded.recipe, loaded.base_dir)
    task.labels = list(LABELS)
    return task


@pytest.mark.parametrize("name", TASK_NAMES)
def test_declared_contract_is_complete(name, write_recipe):
    import peft
    from transformers.pipelines import SUPPORTED_TASKS

    cls = TASKS.all()[name]
    keys = [m.key for m in cls.metrics]
    assert cls.metrics and all(isinstance(m, Metric) for m in cls.metrics)
    assert len(set(keys)) == len(keys) and cls.best_metric in keys
    assert cls.default_metric == cls.best_metric and cls.headline_metrics
    assert cls.pipeline_task in SUPPORTED_TASKS
    assert hasattr(cls.auto_model_class(), "from_pretrained")
    if cls.peft_task_type is not None:
        assert cls.peft_task_type in peft.TaskType.__members__
    peft_cls = cls.peft_model_class()
    assert peft_cls is None or hasattr(peft_cls, "from_pretrained")
    facts = make_task(name, write_recipe).card_facts()
    assert json.loads(json.dumps(facts)) == facts  # goes into run_info.json as it is
    assert "$model" in facts["usage"] and facts["best_metric"] == cls.best_metric


def _tiny_bert(tokenizer_dir):
    from transformers import AutoTokenizer, BertConfig

    def processor(out):
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=37,
                      max_position_embeddings=64), processor


def _tiny_vit(_):
    from transformers import ViTConfig, ViTImageProcessor

    def processor(out):
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out)

    return ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=37), processor


def tiny_model(task, tokenizer_dir):
    """A tiny random model of the task's Auto class with the task's config keys, and the function
    that saves a matching processor."""
    import torch

    auto = task.auto_model_class()
    torch.manual_seed(0)
    for make in (_tiny_bert, _tiny_vit):  # the first architecture the task's Auto class takes
        config, save_processor = make(tokenizer_dir)
        config.update({"num_labels": len(LABELS), "id2label": dict(enumerate(LABELS)),
                       "label2id": {n: i for i, n in enumerate(LABELS)}})
        try:
            model = auto.from_config(config)
        except ValueError:
            continue
        model.config.update(task.model_config_extras())
        return model, save_processor
    pytest.fail(f"no tiny architecture fits {auto.__name__}: add one to this test")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_card_usage_snippet_runs_on_a_saved_model(name, write_recipe, tiny_bert_dir, tmp_path,
                                                  capsys):
    task = make_task(name, write_recipe)
    model, save_processor = tiny_model(task, tiny_bert_dir)
    out = tmp_path / "run"
    model.save_pretrained(out)
    save_processor(out)
    code = usage_snippet(task.card_facts(), json.dumps(str(out)))
    exec(compile(code, f"<usage snippet of {name}>", "exec"), {})
    assert capsys.readouterr().out.strip()  # it printed the model's predictions
    shutil.rmtree(out)


def test_an_incomplete_task_fails_at_registration():
    from sft_hub.tasks.base import Task

    class Half(Task):
        name = "half"
        pipeline_task = "text-classification"

    with pytest.raises(TypeError, match="does not declare: data_spec, best_metric, metrics, "
                                        "auto_model_class"):
        TASKS.register(Half)
    assert "half" not in TASKS.all()


@pytest.mark.parametrize("name", [n for n in TASK_NAMES if TASKS.all()[n].peft_task_type])
@pytest.mark.parametrize("subfolder", ["", "adapter"])
def test_card_adapter_snippet_loads_with_the_task_config(name, subfolder, write_recipe,
                                                         tiny_bert_dir, tmp_path):
    """The card's peft code loads an adapter (at the root, or in adapter/ beside a merged model)
    onto its base model with the label names and the task's config keys."""
    from peft import LoraConfig, get_peft_model

    from sft_hub.card import RunRecord, _peft_usage

    task = make_task(name, write_recipe)
    model, _ = tiny_model(task, tiny_bert_dir)
    base_dir, repo = tmp_path / "base", tmp_path / "repo"
    model.save_pretrained(base_dir)
    lora = LoraConfig(task_type=task.peft_task_type, r=2, target_modules=["query", "value"])
    peft_model = get_peft_model(task.auto_model_class().from_pretrained(base_dir), lora)
    peft_model.save_pretrained(repo / subfolder if subfolder else repo)
    run = RunRecord(recipe={}, metrics={}, info={"task_contract": task.card_facts(),
                                                 "labels": LABELS}, state={})
    code = _peft_usage(run, str(repo), "", f', subfolder="{subfolder}"' if subfolder else "")
    scope: dict = {}
    exec(compile(code, f"<adapter snippet of {name}>", "exec"), scope)
    config = scope["model"].get_base_model().config
    assert config.id2label == dict(enumerate(LABELS))
    for key, value in task.model_config_extras().items():
        assert getattr(config, key) == value
