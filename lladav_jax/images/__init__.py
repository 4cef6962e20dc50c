"""Host-side image work (NumPy/PIL, no accelerator): loading, crops, and feature layouts."""

from lladav_jax.images.crops import (Visual, anyres_visual, image_visual, inference_visuals, pad_to_square,
                                     preprocess_crop, sample_visuals, select_best_resolution, video_visual)
from lladav_jax.images.feature_layout import FeatureLayout, visual_layout
from lladav_jax.images.loading import ImageDecodeError, load_image

__all__ = [
    "FeatureLayout", "ImageDecodeError", "Visual", "anyres_visual", "image_visual", "inference_visuals",
    "load_image", "pad_to_square", "preprocess_crop", "sample_visuals", "select_best_resolution", "video_visual",
    "visual_layout",
]
