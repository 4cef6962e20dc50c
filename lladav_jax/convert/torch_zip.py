"""PyTorch checkpoints in `torch.save`'s zip format, read without torch, one tensor at a time.

The format (torch/serialization.py `_save`, torch/_utils.py): a zip archive whose records sit under
one top-level folder and are stored uncompressed:

  <name>/data.pkl     the pickled object (for a checkpoint: a dict of tensors)
  <name>/data/<key>   the raw bytes of storage <key>
  <name>/byteorder    "little" or "big" (absent before torch 2.1: little)
  <name>/version, .format_version, .storage_alignment, .data/serialization_id

In data.pkl a tensor is the call `torch._utils._rebuild_tensor_v2(storage, storage_offset, size,
stride, requires_grad, backward_hooks[, metadata])`, its storage a persistent id `("storage",
torch.FloatStorage, key, location, numel)` (one storage class per dtype: Float, Half, BFloat16,
Double, Long, Int, Short, Char, Byte, Bool). Dtypes without such a class (uint16/32/64, float8)
use `_rebuild_tensor_v3(..., dtype[, metadata])` with a `torch.storage.UntypedStorage` (numel in
bytes) and the dtype as a global (`torch.uint16`). An nn.Parameter wraps the tensor in
`_rebuild_parameter(tensor, requires_grad, hooks)`; a state dict is a `collections.OrderedDict`
with a `_metadata` attribute. Offsets and strides count elements of the tensor's dtype; several
tensors may view one storage (tied weights, slices, transposes).

The unpickler here resolves only those names, each to a function of this module that records
where a tensor's bytes are (no data is read while unpickling); any other global (`os.system`,
`builtins.eval`, a TorchScript class, ...) stops the load with an error that names it, so no
pickled code runs. The legacy non-zip format (torch < 1.6, `_use_new_zipfile_serialization=False`)
is refused. A read copies just the bytes the tensor spans out of its storage record (seek + read,
no memory map), so the resident memory stays at about one tensor; whole-storage reads are checked
against the record's CRC-32.
"""

import collections
import dataclasses
import io
import os
import pathlib
import pickle
import struct
import zipfile
import zlib

import numpy as np

from lladav_jax.convert.dtypes import DTYPES

# torch's storage classes (torch/storage.py _dtype_to_storage_type_map) -> safetensors dtype names.
STORAGE_DTYPES = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
}
# The dtypes that _rebuild_tensor_v3 names (torch/storage.py _new_dtypes) and that we can hold.
V3_DTYPES = {"uint16": "U16", "uint32": "U32", "uint64": "U64", "float8_e4m3fn": "F8_E4M3",
             "float8_e5m2": "F8_E5M2"}
LEGACY_HINT = ("re-save it with a current torch (torch.save(torch.load(path), path)) or convert it to "
               "safetensors")
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # zip local file header, 30 bytes
_CHUNK = 64 << 20


class TorchFileError(ValueError):
  """A torch checkpoint that cannot be read: the message names the file and the cause."""


class _Refused(Exception):
  """Raised inside the unpickler; becomes a TorchFileError naming the file."""


# ---------------------------------------------------------------------------------------------
# What the unpickler builds: descriptions of tensors, never tensors


class _Inert:
  """Refuses pickle's BUILD, which would otherwise write into the object's __dict__ (frozen or not):
  the objects find_class hands out are shared by every load and must stay as they are."""

  __slots__ = ()

  def __setstate__(self, state):
    raise _Refused(f"pickle sets state on {self!r} (not something torch.save writes)")


@dataclasses.dataclass(frozen=True)
class _StorageType(_Inert):
  name: str  # "torch.FloatStorage", for messages
  dtype: str  # safetensors name
  untyped: bool = False


@dataclasses.dataclass(frozen=True)
class _Dtype(_Inert):
  name: str
  dtype: str


@dataclasses.dataclass(frozen=True)
class _Storage(_Inert):
  key: str
  dtype: str  # the storage's own element type (U8 for an untyped storage)
  numel: int
  untyped: bool = False

  @property
  def nbytes(self) -> int:
    return self.numel * DTYPES[self.dtype].itemsize


@dataclasses.dataclass(frozen=True)
class TensorRef(_Inert):
  """Where one tensor's elements are: storage `key`, element offset and strides (in elements)."""

  storage: _Storage
  dtype: str
  shape: tuple[int, ...]
  stride: tuple[int, ...]
  offset: int

  @property
  def numel(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))

  def span(self) -> tuple[int, int]:
    """[first, last + 1) element of the storage this tensor touches."""
    if self.numel == 0:
      return self.offset, self.offset
    return self.offset, self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) + 1

  def sliced(self, index: tuple) -> "TensorRef":
    """The view `self[index]` (a tuple of slices, one per leading dimension at most)."""
    if len(index) > len(self.shape):
      raise IndexError(f"{len(index)} slices for a {len(self.shape)}-d tensor")
    offset, shape, stride = self.offset, list(self.shape), list(self.stride)
    for axis, part in enumerate(index):
      if not isinstance(part, slice):
        raise TypeError(f"only slices index a stored tensor, got {part!r}")
      start, stop, step = part.indices(shape[axis])
      if step <= 0:
        raise ValueError("only positive slice steps are supported")
      count = len(range(start, stop, step))
      offset += start * stride[axis] if count else 0
      shape[axis], stride[axis] = count, stride[axis] * step
    return dataclasses.replace(self, shape=tuple(shape), stride=tuple(stride), offset=offset)


@dataclasses.dataclass(frozen=True)
class _TypeMarker(_Inert):
  name: str  # torch.Tensor / torch.nn.Parameter, only as _rebuild_from_type_v2's new_type


def _int(value, what: str) -> int:
  if type(value) is not int or value < 0:
    raise _Refused(f"{what} {value!r} is not a non-negative integer")
  return value


def _empty_hooks(hooks) -> None:
  if not isinstance(hooks, dict) or hooks:
    raise _Refused(f"backward hooks {hooks!r} (torch.save writes an empty OrderedDict)")


def _tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype: str,
            metadata) -> TensorRef:
  if not isinstance(storage, _Storage):
    raise _Refused(f"a tensor whose storage is {type(storage).__name__}, not a persistent storage")
  if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride):
    raise _Refused(f"tensor size {size!r} and stride {stride!r}")
  shape = tuple(_int(n, "size") for n in size)
  strides = tuple(_int(s, "stride") for s in stride)
  if type(requires_grad) is not bool:
    raise _Refused(f"requires_grad {requires_grad!r}")
  _empty_hooks(backward_hooks)
  if metadata and (not isinstance(metadata, dict) or any(metadata.values())):
    raise _Refused(f"tensor metadata {metadata!r} (conjugate or negative bits: not a real-valued weight)")
  ref = TensorRef(storage, dtype, shape, strides, _int(storage_offset, "storage offset"))
  first, end = ref.span()
  if end * DTYPES[dtype].itemsize > storage.nbytes:
    raise _Refused(f"a tensor of shape {list(shape)}, stride {list(strides)}, offset {first} reaches past "
                   f"its storage data/{storage.key} ({storage.nbytes} bytes)")
  return ref


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
  if isinstance(storage, _Storage) and storage.untyped:
    raise _Refused("_rebuild_tensor_v2 of an untyped storage (torch writes _rebuild_tensor_v3 for those)")
  dtype = storage.dtype if isinstance(storage, _Storage) else "U8"
  return _tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
  if not isinstance(dtype, _Dtype):
    raise _Refused(f"_rebuild_tensor_v3 with dtype {dtype!r}")
  if isinstance(storage, _Storage) and not storage.untyped:
    raise _Refused("_rebuild_tensor_v3 of a typed storage (torch writes it with an UntypedStorage)")
  return _tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype.dtype, metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks):
  if not isinstance(data, TensorRef) or type(requires_grad) is not bool:
    raise _Refused(f"_rebuild_parameter of {type(data).__name__}")
  _empty_hooks(backward_hooks)
  return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
  if state:
    raise _Refused(f"a parameter with Python attributes {sorted(state) if isinstance(state, dict) else state!r}")
  return _rebuild_parameter(data, requires_grad, backward_hooks)


def _rebuild_from_type_v2(func, new_type, args, state):
  if not (isinstance(func, _Allowed) and func.function in (_rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter)
          and isinstance(new_type, _TypeMarker)):
    raise _Refused(f"_rebuild_from_type_v2 of {func!r} as {new_type!r}")
  if state:
    raise _Refused(f"a {new_type.name} with Python attributes")
  if not isinstance(args, tuple):
    raise _Refused(f"_rebuild_from_type_v2 arguments {type(args).__name__}")
  return func(*args)


def _ordered_dict(items=()):
  if not isinstance(items, (list, tuple)) or not all(isinstance(i, tuple) and len(i) == 2 for i in items):
    raise _Refused("OrderedDict of something other than key-value pairs")
  return collections.OrderedDict(items)


def _encode(text, encoding="utf-8"):  # how protocol 2 pickles bytes: _codecs.encode(str, "latin1")
  if type(text) is not str or encoding not in ("latin1", "latin-1"):
    raise _Refused(f"_codecs.encode({type(text).__name__}, {encoding!r})")
  return text.encode("latin1")


class _Allowed(_Inert):
  """An allowed function as find_class hands it out (a plain function would take BUILD's state)."""

  __slots__ = ("function",)

  def __init__(self, function):
    self.function = function

  def __call__(self, *args):
    return self.function(*args)

  def __repr__(self):
    return self.function.__name__


_FUNCTIONS = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,  # before torch 1.9
    ("_codecs", "encode"): _encode,
}
_GLOBALS = {
    **{name: _Allowed(function) for name, function in _FUNCTIONS.items()},
    ("torch", "Tensor"): _TypeMarker("torch.Tensor"),
    ("torch.nn.parameter", "Parameter"): _TypeMarker("torch.nn.Parameter"),
    ("torch", "UntypedStorage"): _StorageType("torch.UntypedStorage", "U8", untyped=True),
    ("torch.storage", "UntypedStorage"): _StorageType("torch.storage.UntypedStorage", "U8", untyped=True),
    **{("torch", name): _StorageType(f"torch.{name}", dtype) for name, dtype in STORAGE_DTYPES.items()},
    **{("torch", name): _Dtype(f"torch.{name}", dtype) for name, dtype in V3_DTYPES.items()},
}


def _refusal(module: str, name: str) -> str:
  if module == "torch" and name.endswith("Storage"):
    return (f"storage type torch.{name} is not supported (tensors of dtype "
            f"{', '.join(sorted(set(STORAGE_DTYPES.values()) | set(V3_DTYPES.values())))} are)")
  if module.startswith("__torch__"):
    return f"{module}.{name}: a TorchScript class (a torch.jit.save archive, not a state dict)"
  return (f"refused to load the global {module}.{name}: only the tensor-rebuild functions and storage "
          "types of a state dict are allowed (a pickle that names anything else could run code)")


class _Unpickler(pickle.Unpickler):

  def __init__(self, data: bytes):
    super().__init__(io.BytesIO(data))
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module, name):
    target = _GLOBALS.get((module, name))
    if target is None:
      raise _Refused(_refusal(module, name))
    return target

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise _Refused(f"persistent id {pid!r} (torch writes ('storage', type, key, location, numel))")
    _, storage_type, key, location, numel = pid
    if not isinstance(storage_type, _StorageType) or type(key) is not str or type(location) is not str:
      raise _Refused(f"persistent id {pid!r}")
    numel = _int(numel, "storage size")
    storage = _Storage(key, storage_type.dtype, numel, storage_type.untyped)
    known = self.storages.setdefault(key, storage)
    if known != storage:
      raise _Refused(f"storage data/{key} appears as {known} and as {storage}")
    return known


# ---------------------------------------------------------------------------------------------
# The file


@dataclasses.dataclass(frozen=True)
class _Record:
  name: str  # in the zip, e.g. "pytorch_model/data/3"
  data_offset: int  # in the file
  size: int
  crc: int


class TorchZipFile:
  """The tensors of one `torch.save` zip file: `tensors` {key: TensorRef}, read one at a time.

  Opening reads the zip directory and data.pkl only; a file that cannot be read raises a
  TorchFileError that names it and says why.
  """

  def __init__(self, file: str | pathlib.Path):
    self.file = pathlib.Path(file)
    self.tensors: dict[str, TensorRef] = {}
    self._records: dict[str, _Record] = {}
    self._verified: set[str] = set()
    self.big_endian = False
    self._open()

  def _error(self, message: str) -> TorchFileError:
    return TorchFileError(f"{self.file}: {message}")

  def _open(self) -> None:
    try:
      with open(self.file, "rb") as f:
        magic = f.read(4)
        size = os.fstat(f.fileno()).st_size
    except OSError as e:
      raise self._error(f"unreadable ({e})") from e
    if magic != b"PK\x03\x04":
      if magic[:1] == b"\x80":
        raise self._error(f"the legacy torch format (not a zip: torch < 1.6 or "
                          f"_use_new_zipfile_serialization=False) is not read; {LEGACY_HINT}")
      raise self._error("not a torch.save zip checkpoint (no zip header)" if magic else "empty file")
    try:
      with zipfile.ZipFile(self.file) as archive:
        infos = archive.infolist()
        pickles = [i for i in infos if i.filename.count("/") == 1 and i.filename.endswith("/data.pkl")]
        if any(i.filename.endswith("/constants.pkl") for i in infos):
          raise self._error("a TorchScript archive (torch.jit.save), not a state dict")
        if len(pickles) != 1:
          raise self._error(f"{len(pickles)} <name>/data.pkl records (a torch.save checkpoint has one)")
        prefix = pickles[0].filename[:-len("data.pkl")]
        data = archive.read(pickles[0])  # zipfile checks its CRC
        byteorder = (archive.read(prefix + "byteorder").strip() if prefix + "byteorder" in archive.NameToInfo
                     else b"little")
        storage_infos = {i.filename[len(prefix) + len("data/"):]: i for i in infos
                         if i.filename.startswith(prefix + "data/")}
    except zipfile.BadZipFile as e:
      raise self._error(f"a corrupt or truncated zip ({e})") from e
    except (OSError, EOFError) as e:
      raise self._error(f"unreadable ({e})") from e
    if byteorder not in (b"little", b"big"):
      raise self._error(f"byteorder record {byteorder!r}")
    self.big_endian = byteorder == b"big"
    try:
      obj = _Unpickler(data).load()
    except _Refused as e:
      raise self._error(f"data.pkl: {e}") from None
    except Exception as e:  # a malformed pickle: any of pickle's own errors
      raise self._error(f"data.pkl: not a pickle that torch.save writes ({type(e).__name__}: {e})") from None
    self.tensors = self._state_dict(obj)
    self._records = self._storage_records(storage_infos, size)

  def _state_dict(self, obj) -> dict[str, TensorRef]:
    if not isinstance(obj, dict):
      raise self._error(f"holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
    nested = [k for k, v in obj.items() if isinstance(v, dict)]
    if nested:
      raise self._error(f"holds nested dicts (under {', '.join(map(repr, nested[:3]))}), not a flat state dict "
                        "of tensors; save the model's state_dict() itself")
    bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if type(k) is not str or not isinstance(v, TensorRef)]
    if bad:
      raise self._error(f"entries that are not named tensors: {', '.join(bad[:5])}"
                        f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}")
    return dict(obj)

  def _storage_records(self, infos: dict[str, zipfile.ZipInfo], file_size: int) -> dict[str, _Record]:
    records = {}
    with open(self.file, "rb") as f:
      storages = {ref.storage.key: ref.storage for ref in self.tensors.values()}
      for key, storage in sorted(storages.items(), key=lambda item: (len(item[0]), item[0])):  # file order
        info = infos.get(key)
        if info is None:
          raise self._error(f"data/{key} (the storage of {self._users(key)}) is missing from the zip")
        if info.compress_type != zipfile.ZIP_STORED:
          raise self._error(f"data/{key} is compressed; torch.save stores every record uncompressed "
                            "(was the file re-zipped?)")
        if info.file_size != storage.nbytes:
          raise self._error(f"data/{key} holds {info.file_size} bytes, its storage needs {storage.nbytes}")
        f.seek(info.header_offset)
        header = f.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
          raise self._error(f"data/{key}: no zip record header at byte {info.header_offset} (corrupt file)")
        name_len, extra_len = _LOCAL_HEADER.unpack(header)[-2:]
        offset = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        if offset + info.file_size > file_size:
          raise self._error(f"data/{key} ends at byte {offset + info.file_size} of a {file_size}-byte file "
                            "(truncated)")
        records[key] = _Record(info.filename, offset, info.file_size, info.CRC)
    return records

  def _users(self, key: str) -> str:
    users = [k for k, ref in self.tensors.items() if ref.storage.key == key]
    return users[0] if len(users) == 1 else f"{users[0]} and {len(users) - 1} more"

  def read(self, key: str) -> np.ndarray:
    """One whole tensor, as stored (bfloat16 stays bfloat16)."""
    return self._read(key, self.tensors[key], verify=True)

  def read_slice(self, key: str, index: tuple) -> np.ndarray:
    """Part of a tensor (`index`: a tuple of slices); only the bytes it spans are read."""
    return self._read(key, self.tensors[key].sliced(tuple(index)), verify=False)

  def _read(self, key: str, ref: TensorRef, verify: bool) -> np.ndarray:
    dtype = DTYPES[ref.dtype]
    if ref.numel == 0:
      return np.empty(ref.shape, dtype)
    record = self._records[ref.storage.key]
    first, end = ref.span()
    buffer = np.empty((end - first) * dtype.itemsize, np.uint8)
    with open(self.file, "rb") as f:
      f.seek(record.data_offset + first * dtype.itemsize)
      got = f.readinto(memoryview(buffer))
      if verify and record.name not in self._verified:
        whole = first == 0 and buffer.size == record.size
        self._verify(f, record, key, buffer if whole else None)
    if got != buffer.size:
      raise self._error(f"{key}: {got} of {buffer.size} bytes of {record.name} could be read (truncated)")
    if self.big_endian and dtype.itemsize > 1:
      buffer = buffer.view(f">u{dtype.itemsize}").astype(f"<u{dtype.itemsize}").view(np.uint8)
    values = buffer.view(dtype)
    strides = tuple(s * dtype.itemsize for s in ref.stride)
    if strides == _contiguous_strides(ref.shape, dtype.itemsize) and values.size == ref.numel:
      return values.reshape(ref.shape)
    return np.array(np.lib.stride_tricks.as_strided(values, ref.shape, strides, writeable=False))

  def _verify(self, f, record: _Record, key: str, whole: np.ndarray | None) -> None:
    """Checks a storage record against its CRC-32 once (torch may write 0: no checksum)."""
    if record.crc == 0:
      return
    if whole is not None:
      crc = zlib.crc32(whole)
    else:
      crc, left = 0, record.size
      f.seek(record.data_offset)
      while left:
        chunk = f.read(min(left, _CHUNK))
        if not chunk:
          break
        crc, left = zlib.crc32(chunk, crc), left - len(chunk)
    if crc != record.crc:
      raise self._error(f"{key}: {record.name} fails its CRC-32 check (corrupt file)")
    self._verified.add(record.name)


def _contiguous_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
  strides, step = [], itemsize
  for n in reversed(shape):
    strides.append(step)
    step *= max(n, 1)
  return tuple(reversed(strides))

