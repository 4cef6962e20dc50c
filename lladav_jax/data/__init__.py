"""Data: LLaVA-format conversations -> model-ready batches (grain), and prompts for generation."""

from lladav_jax.data.batching import pad_batch_to, upstream_padding
from lladav_jax.data.chat_format import (DEFAULT_SYSTEM_PROMPT, TEMPLATE_LLADA, TEMPLATE_PLAIN, ChatEncoder,
                                         tokenizer_image_token)
from lladav_jax.data.config import (OVERLONG_SKIP, OVERLONG_TRUNCATE, PADDING_MASKED, PADDING_UPSTREAM, DataConfig,
                                    data_config)
from lladav_jax.data.examples import ExampleBuilder
from lladav_jax.data.media import VideoOptions
from lladav_jax.data.pipeline import DataError, DataIterator, make_data_iterator, make_dataset, pad_to_common_shape
from lladav_jax.data.prompts import build_chat_prompt, build_prompt, render_chat
from lladav_jax.data.records import THINK_NO_THINK, THINK_NONE, THINK_RANDOM, Message, Record, parse_record
from lladav_jax.data.rejects import REASONS, RecordRejected
from lladav_jax.data.sources import RecordSource, SourceError, SourceSpec, load_mixture_yaml, load_or_build_index
from lladav_jax.data.tokenizer import Tokenizer, TokenizerError

__all__ = [
    "ChatEncoder", "DEFAULT_SYSTEM_PROMPT", "DataConfig", "DataError", "DataIterator", "ExampleBuilder", "Message",
    "OVERLONG_SKIP", "OVERLONG_TRUNCATE", "PADDING_MASKED", "PADDING_UPSTREAM", "REASONS", "Record",
    "RecordRejected", "RecordSource", "SourceError", "SourceSpec", "TEMPLATE_LLADA", "TEMPLATE_PLAIN",
    "THINK_NONE", "THINK_NO_THINK", "THINK_RANDOM", "Tokenizer", "TokenizerError", "VideoOptions",
    "build_chat_prompt", "build_prompt", "data_config", "load_mixture_yaml", "load_or_build_index",
    "make_data_iterator", "make_dataset", "pad_batch_to", "pad_to_common_shape", "parse_record", "render_chat",
    "tokenizer_image_token", "upstream_padding",
]
