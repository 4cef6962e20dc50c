"""Tensor dtypes by their safetensors names ("BF16", "F32", ...), the names every reader reports."""

import ml_dtypes
import numpy as np

# safetensors dtype names -> numpy dtypes (bfloat16 and float8 come from ml_dtypes).
DTYPES = {
    "BF16": np.dtype(ml_dtypes.bfloat16), "F16": np.dtype(np.float16), "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
    "I16": np.dtype(np.int16), "U16": np.dtype(np.uint16), "I32": np.dtype(np.int32),
    "U32": np.dtype(np.uint32), "I64": np.dtype(np.int64), "U64": np.dtype(np.uint64),
    "BOOL": np.dtype(np.bool_),
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
# Weights are floating point; anything else (quantised, integer) cannot become a parameter.
WEIGHT_DTYPES = ("BF16", "F16", "F32", "F64")


def dtype_name(dtype) -> str:
  dtype = np.dtype(dtype)
  if dtype not in DTYPE_NAMES:
    raise ValueError(f"dtype {dtype} has no safetensors name")
  return DTYPE_NAMES[dtype]
