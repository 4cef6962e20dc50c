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
  for field, value in (("attention_impl", "flash"), ("loss_chunk", -1)):
    config = importlib.import_module("configs.tiny").get_config()
    config.compute[field] = value
    with pytest.raises(ValueError, match=f"compute.{field}"):
      run_config.compute_config(config)


def test_splash_attention_with_the_dialogue_causal_mask_fails_at_setup():
  from lladav_jax.train import loop

  config = importlib.import_module("configs.tiny").get_config()
  config.compute.attention_impl = "splash"
  config.train.dialogue_causal = True
  with pytest.raises(ValueError, match="config.train.dialogue_causal .*config.compute.attention_impl = 'splash'"):
    loop.setup(config, total_steps=1)


# Paper Table 1 and the upstream scripts: (global batch, trainable parts, lr, vision lr, max length,
# the stage whose params it starts from).
RECIPES = {
    "stage1_projector": (64, ("projector",), 1e-3, None, 8192, "ckpt/stage1_init"),
    "stage2_si": (256, ("vision", "projector", "language"), 1e-5, 2e-6, 8192, "runs/stage1_projector"),
    "stage2_ov": (256, ("vision", "projector", "language"), 1e-5, 2e-6, 16384, "runs/stage2_si"),
    "stage3_reasoning": (256, ("vision", "projector", "language"), 1e-5, 2e-6, 8192, "runs/stage2_ov"),
    "stage3_mix": (256, ("vision", "projector", "language"), 1e-5, 2e-6, 16384, "runs/stage3_reasoning"),
    "llava_next_ablation": (128, ("vision", "projector", "language"), 1e-5, 2e-6, 8192, "runs/stage1_projector"),
    # Upstream's llada_v_finetune.sh (4 nodes x 8 GPUs x 1 x 2 accumulation steps); the user names the checkpoint.
    "finetune": (64, ("vision", "projector", "language"), 1e-5, 2e-6, 8192, None),
    "finetune_frozen_vision": (64, ("projector", "language"), 1e-5, None, 8192, None),
}


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_training_sections_load(name):
  from lladav_jax.data import data_config
  from lladav_jax.train import optimizer

  config = importlib.import_module(f"configs.{name}").get_config()
  assert set(config.optim.trainable) <= set(optimizer.COMPONENTS)
  rates = optimizer.learning_rates(config.optim)
  assert all(lr > 0 for lr in rates.values())
  assert config.train.global_batch_size % config.train.micro_batches == 0
  assert config.train.data_source in ("pipeline", "synthetic")
  if config.data.sources:
    data = data_config(config.data)
    # The fine-tuning recipes leave the path to the user (the run refuses to start without one).
    assert data.sources[0].path.endswith(".json") or (name.startswith("finetune") and not data.sources[0].path)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_follow_the_paper(name):
  batch, trainable, lr, vision_lr, max_length, init_from = RECIPES[name]
  config = importlib.import_module(f"configs.{name}").get_config()
  assert config.train.global_batch_size == batch
  assert tuple(config.optim.trainable) == trainable
  assert config.optim.lr == lr and config.optim.vision_lr == vision_lr
  assert config.model.max_length == max_length
  assert config.checkpoint.init_from == init_from
  assert (config.optim.b1, config.optim.b2, config.optim.eps) == (0.9, 0.999, 1e-8)
  assert (config.optim.weight_decay, config.optim.max_grad_norm, config.optim.warmup_ratio) == (0.0, 1.0, 0.03)
  assert config.train.num_epochs == 1
  stage1 = name == "stage1_projector"
  assert (config.data.template == "plain") == stage1
  assert (run_config.model_config(config).is_anyres, run_config.model_config(config).uses_image_newline) == (
      (not stage1,) * 2)
