"""The timm backend: name resolution, weights from a local file, and a run directory that timm's own
loader, transformers' Auto classes and pipeline() all read back with the real label names."""
from __future__ import annotations

from pathlib import Path

import pytest

from sft_hub.errors import RecipeError
from sft_hub.models.timm_backend import build_timm_classifier, image_processor, timm_source
from sft_hub.recipe.schema import ModelSpec

LABELS = ["cat", "dog", "owl"]


def spec(**kw) -> ModelSpec:
    return ModelSpec(backend="timm", **kw)


def test_names_map_to_timm_sources(tmp_path):
    assert timm_source(spec(name="resnet18"), tmp_path) == ("resnet18", {"pretrained": True})
    assert timm_source(spec(name="timm/resnet50.a1_in1k", revision="v2"), tmp_path) == (
        "hf-hub:timm/resnet50.a1_in1k@v2", {"pretrained": True})
    scratch = timm_source(spec(name="resnet18", pretrained=False), tmp_path)
    assert scratch[1] == {"pretrained": False}
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    name, kwargs = timm_source(spec(name="resnet18", path="w.safetensors"), tmp_path)
    assert name == "resnet18" and kwargs["pretrained_cfg_overlay"] == {"file": str(weights)}
    (tmp_path / "exported").mkdir()
    assert timm_source(spec(name="resnet18", path="exported"), tmp_path)[0] == \
        f"local-dir:{tmp_path / 'exported'}"


def test_weights_with_pretrained_false_is_a_recipe_error(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(RecipeError) as err:
        timm_source(spec(name="resnet18", path="w.safetensors", pretrained=False), tmp_path)
    assert err.value.field == "model.pretrained"


def test_unknown_architecture_suggests_close_names(tmp_path):
    with pytest.raises(RecipeError) as err:
        build_timm_classifier(spec(name="resnet_18", pretrained=False), tmp_path, LABELS)
    assert err.value.field == "model.name" and "resnet18" in err.value.hint


def test_local_weights_file_loads_backbone_and_replaces_head(tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file

    source = timm.create_model("test_efficientnet", num_classes=1000)
    save_file(source.state_dict(), str(tmp_path / "in1k.safetensors"))
    model = build_timm_classifier(spec(name="test_efficientnet", path="in1k.safetensors"),
                                  tmp_path, LABELS)
    loaded = model.timm_model.state_dict()
    assert torch.equal(loaded["conv_stem.weight"], source.state_dict()["conv_stem.weight"])
    assert loaded["classifier.weight"].shape[0] == 3
    # the new head starts small (as transformers initialises a resized head), not with timm's
    # from-scratch init, so the first loss is near log(3) instead of several times that
    assert loaded["classifier.weight"].std() < 0.03 and not loaded["classifier.bias"].any()
    assert model.config.id2label == {0: "cat", 1: "dog", 2: "owl"}


def test_weights_of_another_architecture_name_the_path_field(tmp_path):
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("test_resnet").state_dict(), str(tmp_path / "r.safetensors"))
    with pytest.raises(RecipeError) as err:
        build_timm_classifier(spec(name="test_efficientnet", path="r.safetensors"), tmp_path,
                              LABELS)
    assert err.value.field == "model.path"


def test_saved_model_reloads_with_timm_transformers_and_pipeline(tmp_path):
    import numpy as np
    import timm
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    model = build_timm_classifier(spec(name="test_efficientnet", pretrained=False), tmp_path,
                                  LABELS, image_size=64).eval()
    run = tmp_path / "run"
    model.save_pretrained(run)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(pixel_values=x).logits

    native = timm.create_model(f"local-dir:{run}", pretrained=True).eval()
    assert native.pretrained_cfg["label_names"] == LABELS
    assert tuple(native.pretrained_cfg["input_size"]) == (3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(native(x), expected)

    reloaded = AutoModelForImageClassification.from_pretrained(run).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=x).logits, expected)
    assert tuple(AutoImageProcessor.from_pretrained(run).data_config["input_size"]) == (3, 64, 64)

    image = Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype("uint8"))
    predictions = pipeline("image-classification", model=str(run))(image)
    assert {p["label"] for p in predictions} == set(LABELS)


def test_fixed_size_model_is_built_for_the_requested_size(tmp_path):
    import torch

    model = build_timm_classifier(spec(name="test_vit", pretrained=False), tmp_path, LABELS,
                                  image_size=64)
    assert model.config.model_args["img_size"] == [64, 64]
    assert image_processor(model).data_config["input_size"] == (3, 64, 64)
    out = model(pixel_values=torch.randn(2, 3, 64, 64), labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.loss.requires_grad


def test_processor_matches_what_the_run_directory_rebuilds(tmp_path):
    from transformers import AutoImageProcessor

    model = build_timm_classifier(spec(name="test_resnet", pretrained=False), tmp_path, LABELS)
    model.save_pretrained(tmp_path / "run")
    assert image_processor(model).data_config == \
        AutoImageProcessor.from_pretrained(Path(tmp_path / "run")).data_config
