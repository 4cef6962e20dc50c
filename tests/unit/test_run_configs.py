"""Every run config in configs/ loads and maps onto the module configs."""

import importlib
import pathlib

import pytest

from lladav_jax import run_config, sharding

CONFIG_NAMES = sorted(p.stem for p in pathlib.Path(__file__).parents[2].joinpath("configs").glob("*.py")
                      if p.stem != "__init__")


def test_there_are_configs():
  assert {"base", "tiny"} <= set(CONFIG_NAMES)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_maps_onto_module_configs(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  model = run_config.model_config(config)
  run_config.compute_config(config)
  sharding.normalize_rules(config.logical_axis_rules)
  assert set(config.mesh.keys()) == set(sharding.MESH_AXES)
  assert model.vision_feature_depth == model.vision.num_hidden_layers - 1


def test_a_bad_choice_in_a_config_fails_at_load():
  config = importlib.import_module("configs.tiny").get_config()
  config.compute.remat_policy = "sometimes"
  with pytest.raises(ValueError, match="remat_policy"):
    run_config.compute_config(config)
  config = importlib.import_module("configs.tiny").get_config()
  config.model.image_aspect_ratio = "anyres_max"
  with pytest.raises(ValueError, match="image_aspect_ratio"):
    run_config.model_config(config)
  with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
    sharding.normalize_rules([["embed", "model"]])
