"""The LLaDA-V towers and their composition (pure-functional Flax linen modules, device code only).

Their inputs are built on the host by `lladav_jax.samples` (`build_sample`, `collate`, `model_inputs`).
"""

from lladav_jax.model_config import LLaDAConfig, LLaDAVConfig, ProjectorConfig, SiglipConfig
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.llada import KVCache, LLaDAModel
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.models.masks import AttentionMask, make_attention_mask, visible_keys_mask
from lladav_jax.models.projector import Projector
from lladav_jax.models.siglip import SiglipVisionTower

__all__ = [
    "AttentionMask", "ComputeConfig", "KVCache", "LLaDAConfig", "LLaDAModel", "LLaDAV", "LLaDAVConfig",
    "ProjectorConfig", "Projector", "SiglipConfig", "SiglipVisionTower", "make_attention_mask", "visible_keys_mask",
]
