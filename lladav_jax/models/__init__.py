"""The LLaDA-V towers and their composition (pure-functional Flax linen modules)."""

from lladav_jax.model_config import ComputeConfig, LLaDAConfig, LLaDAVConfig, ProjectorConfig, SiglipConfig
from lladav_jax.models.llada import LLaDAModel
from lladav_jax.models.lladav import LLaDAV, model_inputs
from lladav_jax.models.masks import make_attention_mask
from lladav_jax.models.multimodal_inputs import Sample, SampleError, build_sample, collate
from lladav_jax.models.projector import Projector
from lladav_jax.models.siglip import SiglipVisionTower

__all__ = [
    "ComputeConfig", "LLaDAConfig", "LLaDAModel", "LLaDAV", "LLaDAVConfig", "ProjectorConfig", "Sample",
    "SampleError", "SiglipConfig", "SiglipVisionTower", "Projector", "build_sample", "collate",
    "make_attention_mask", "model_inputs",
]
