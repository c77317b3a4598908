"""The plugin contract, checked for every registered strategy on every registered task.

Modelled on peft's ``tests/test_custom_models.py`` (one tester drives every method): the cases
come from the registries, so a new strategy or task is covered without editing this file. A task
needs a tiny fixture in ``tests/contract_fixtures.py`` (the test says so when one is missing);
whether a strategy can wrap a fixture's model is asked of the strategy's contract (``backends``).

Each case: the task builds its data and model, the strategy prepares it, the Trainer takes two
steps, the strategy saves in each form it declares, the result reloads with the ecosystem's own
one-liner (``pipeline`` / ``AutoPeftModelFor...`` / ``PeftModel`` / ``timm.create_model``) and
reproduces the trained model's logits.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sft_hub.errors import RecipeError
from sft_hub.catalog import recipe_model
from sft_hub.strategies import STRATEGIES
from sft_hub.strategies.base import (BACKENDS, CARD_LAYOUTS, ENGINES, LAYOUTS_OF, PUSHABLE,
                                     SAVE_FORMS, StrategyContract)
from sft_hub.tasks import TASKS, get_task_class

from .contract_fixtures import FIXTURES

STRATEGY_NAMES = list(STRATEGIES.all())
TASK_NAMES = list(TASKS.all())
FORMS = [(s, f) for s in STRATEGY_NAMES for f in STRATEGIES.all()[s].save_forms]


def _missing_fixture(task: str) -> str:
    return (f"task {task!r} is registered but tests/contract_fixtures.py has no tiny fixture "
            f"for it: add a builder to FIXTURES there (tiny model from config + a few data rows)")


# -- declared fields --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, form", FORMS, ids=[f"{s}-{f}" for s, f in FORMS])
def test_contract_fields_are_present_and_well_formed(name, form):
    cls = STRATEGIES.all()[name]
    spec = cls.spec_saving(cls.spec_class(), form)
    contract = spec.contract()
    assert isinstance(contract, StrategyContract) and contract.name == name
    assert contract.saves == form and form in contract.save_forms
    assert contract.save_forms and set(contract.save_forms) <= set(SAVE_FORMS)
    assert contract.push_forms == PUSHABLE[form] and "model" in contract.push_forms
    assert contract.merges_on_save == (form in ("merged", "both"))
    assert set(contract.engines) | set(contract.unsupported_engines) == set(ENGINES)
    assert not set(contract.engines) & set(contract.unsupported_engines)
    if contract.merges_on_save:
        assert not {"fsdp", "deepspeed"} & set(contract.engines)
    for engine, limit in contract.unsupported_engines.items():
        assert limit.reason and limit.hint and limit.field.startswith("strategy.")
        with pytest.raises(RecipeError) as e:
            contract.check_engine(engine)
        assert e.value.field == limit.field
    contract.check_engine(None)  # one process: always
    assert contract.backends and set(contract.backends) <= set(BACKENDS)
    assert isinstance(contract.trains, str) and contract.trains.strip()
    layouts = {layout for f in contract.save_forms for layout in LAYOUTS_OF[f]}
    assert set(contract.weights) == layouts and set(layouts) <= set(CARD_LAYOUTS)
    assert all(isinstance(v, str) and v.strip() for v in contract.weights.values())
    facts = spec.card_facts()  # what run_info.json records: plain JSON, the same facts
    assert json.loads(json.dumps(facts)) == facts == contract.to_dict()


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_registration_refuses_a_strategy_missing_a_declared_piece(name):
    from sft_hub.strategies.base import Strategy, check_strategy_class

    cls = STRATEGIES.all()[name]
    incomplete = type(f"Incomplete{cls.__name__}", (cls,), {"trains": ""})
    with pytest.raises(TypeError, match="trains"):
        check_strategy_class(incomplete)
    no_weights = type(f"NoWeights{cls.__name__}", (cls,), {"weights": {}})
    with pytest.raises(TypeError, match="weights"):
        check_strategy_class(no_weights)
    assert issubclass(cls, Strategy)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_registered_task_has_a_contract_fixture(task):
    assert task in FIXTURES, _missing_fixture(task)


# -- train, save in each form, reload, same logits --------------------------------------------------
@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """(task, fixture id) -> TaskFixture, built once per module on first use."""
    root = tmp_path_factory.mktemp("contract")
    cache: dict[tuple[str, str], object] = {}

    def get(task: str, fixture_id: str):
        if task not in FIXTURES:
            pytest.fail(_missing_fixture(task))
        if (task, fixture_id) not in cache:
            cache[task, fixture_id] = FIXTURES[task][fixture_id](root)
        return cache[task, fixture_id]
    return get


def _reload_plain(fixture, task_cls, out: Path):
    """The plain model at ``out``, loaded as a user would: timm's or transformers' pipeline."""
    if fixture.backend == "timm":
        import timm

        native = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
        return lambda inputs: native(inputs["pixel_values"])
    from transformers import pipeline

    model = pipeline(task_cls.pipeline_task, model=str(out), device="cpu").model.eval()
    return lambda inputs: model(**inputs).logits


def _reload_adapter(fixture, task, task_cls, adapter_dir: Path):
    """The adapter at ``adapter_dir``: peft's Auto class when the task has one, else PeftModel
    on the base the recipe names (timm: the base the task builds, as the run built it)."""
    from peft import PeftConfig, PeftModel

    auto = task_cls.peft_model_class()
    if auto is not None:
        model = auto.from_pretrained(str(adapter_dir)).eval()
    else:
        if fixture.backend == "timm":
            base = task.build_model()
        else:
            config = PeftConfig.from_pretrained(str(adapter_dir))
            base = task_cls.auto_model_class().from_pretrained(config.base_model_name_or_path)
        model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    if fixture.backend == "timm":
        return lambda inputs: model(pixel_values=inputs["pixel_values"]).logits
    return lambda inputs: model(**inputs).logits


def _cases():
    """Every registered strategy x every registered task's fixtures (a task without a fixture
    still gets its cases, which fail saying what to add)."""
    return [pytest.param(strategy, task, fixture_id, id=f"{strategy}-{task}-{fixture_id or 'none'}")
            for strategy in STRATEGY_NAMES for task in TASK_NAMES
            for fixture_id in (FIXTURES.get(task) or {"": None})]


@pytest.mark.parametrize("strategy_name, task_name, fixture_id", _cases())
def test_strategy_trains_saves_and_reloads_on_task(strategy_name, task_name, fixture_id, fixtures,
                                                   tmp_path):
    import torch
    from transformers import Trainer, TrainingArguments

    fixture = fixtures(task_name, fixture_id)
    cls = STRATEGIES.all()[strategy_name]
    spec = cls.spec_class()
    if fixture.backend not in spec.contract().backends:
        pytest.skip(f"{strategy_name} declares backends {spec.contract().backends}, "
                    f"not {fixture.backend}")
    recipe = recipe_model(task_name).model_validate(
        {**fixture.recipe, "strategy": spec.model_dump(), "training": {"seed": 0}})
    task_cls = get_task_class(task_name)
    task = task_cls(recipe, fixture.base_dir)
    raw = task.load_data()
    task.build_processor()
    data = task.preprocess(raw)
    strategy = cls(recipe.strategy, task)
    model = strategy.prepare(task.build_model())

    args = TrainingArguments(
        output_dir=str(tmp_path / "checkpoints"), max_steps=2, per_device_train_batch_size=4,
        per_device_eval_batch_size=4, learning_rate=1e-2, use_cpu=True, report_to="none",
        save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True,
        dataloader_pin_memory=False, seed=0, **task.trainer_kwargs())
    trainer = Trainer(model=model, args=args, train_dataset=data["train"],
                      data_collator=task.data_collator(), processing_class=task.processor,
                      callbacks=strategy.callbacks())
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters()
               if p.requires_grad), "two steps changed no trainable parameter"

    batch = next(iter(trainer.get_eval_dataloader(data["validation"])))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits

    for form in cls.save_forms:
        out = tmp_path / form
        cls(cls.spec_saving(recipe.strategy, form), task).save(model, out)
        task.save_processor(out)
        loaders = []
        if form in ("model", "merged", "both"):
            loaders.append(("plain", _reload_plain(fixture, task_cls, out)))
        if form in ("adapter", "both"):
            adapter_dir = out if form == "adapter" else out / "adapter"
            loaders.append(("adapter", _reload_adapter(fixture, task, task_cls, adapter_dir)))
        assert loaders, f"form {form!r} produced nothing to load"
        for what, run in loaders:
            with torch.no_grad():
                got = run(inputs)
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4,
                                       msg=lambda m: f"{form} ({what}): {m}")
