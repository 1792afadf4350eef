"""Reading xAI's Grok-1 release checkpoint (`ckpt-0/`) without trusting its pickles.

The release (github.com/xai-org/grok-1, `checkpoint.py`) stores one pickle per parameter, named
`tensor{index:05d}_{shard:03d}` (shard 000 on a single host), where `index` is the position of the parameter in
JAX's flattening of the Haiku params dict. Haiku names each parameter `<module path>/<param>`; JAX flattens a dict
with its keys sorted as strings, so the order is the sorted module paths (`decoder_layer_10` before
`decoder_layer_2`). Each pickle holds either a plain numpy array (norm scales, router, embeddings) or a
`QuantizedWeight8bit` (int8 `weight` and bf16 `scales`, pickled from `__main__`).

Pickles can run arbitrary code on load, so they are read with an unpickler that resolves only the handful of
globals an array or a `QuantizedWeight8bit` needs, and refuses everything else before anything is called.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Matmul weights of every layer, in module-path form (the release's names; see model.py's Linear/MoELayer).
_LAYER_PARAMS = (
    ("multi_head_attention/query", "w"),
    ("multi_head_attention/key", "w"),
    ("multi_head_attention/value", "w"),
    ("multi_head_attention/linear", "w"),  # attention output projection
    ("rms_norm", "scale"),  # before attention
    ("rms_norm_1", "scale"),  # after attention
    ("rms_norm_2", "scale"),  # before the MoE
    ("rms_norm_3", "scale"),  # after the MoE
    ("router", "w"),
    ("moe/linear", "w"),  # expert gate (goes through gelu)
    ("moe/linear_v", "w"),  # expert up
    ("moe/linear_1", "w"),  # expert down
)
_TOP_PARAMS = (("language_model/in_out_embed", "embeddings"), ("language_model/rms_norm", "scale"))
PARAMS_PER_LAYER = len(_LAYER_PARAMS)
TOP_LEVEL_PARAMS = len(_TOP_PARAMS)


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint pickle asked for a global outside the allow-list; nothing from it was executed."""


class CheckpointFormatError(ValueError):
    """The checkpoint is not laid out as the Grok-1 release is (missing files, wrong shapes, wrong types)."""


@dataclass
class QuantizedWeight8bit:
    """Our stand-in for the release's `__main__.QuantizedWeight8bit`: `weight` int8, `scales` bf16.

    Dequantised value = weight * scales, where `scales` has the weight's shape except along the input axis
    (second to last), which it splits into `scales.shape[-2]` equal contiguous blocks (1 block for column-parallel
    layers; one per model-parallel shard, 8 in the release, for row-parallel ones).
    """

    weight: np.ndarray
    scales: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weight.shape)


def tensor_filename(index: int, shard: int = 0) -> str:
    """File name of parameter `index` (checkpoint.py: f"tensor{i:05d}_{idx:03d}"; idx is 0 on one host)."""
    return f"tensor{index:05d}_{shard:03d}"


def release_param_paths(num_layers: int) -> list[str]:
    """The release's parameter paths (`module/param`), in file order, for a model of `num_layers` layers."""
    entries = list(_TOP_PARAMS)
    for i in range(num_layers):
        entries += [(f"transformer/decoder_layer_{i}/{module}", param) for module, param in _LAYER_PARAMS]
    # JAX sorts dict keys when flattening; the params dict is keyed by module path, then by param name.
    entries.sort()
    return [f"{module}/{param}" for module, param in entries]


def num_layers_for_file_count(count: int) -> int:
    """Layers of a checkpoint of `count` files; raises if the count fits no whole number of layers."""
    layers, rest = divmod(count - TOP_LEVEL_PARAMS, PARAMS_PER_LAYER)
    if rest or layers < 1:
        raise CheckpointFormatError(
            f"{count} tensor files fit no whole number of layers ({TOP_LEVEL_PARAMS} + {PARAMS_PER_LAYER} per layer)"
        )
    return layers


# ---------------------------------------------------------------------------------------------------------------
# Safe unpickling


def _bfloat16():
    import ml_dtypes  # optional dependency, only needed once a bf16 array is met

    return ml_dtypes.bfloat16


def _numpy_attr(*names: str):
    def resolve():
        obj = np
        for name in names:
            obj = getattr(obj, name)
        return obj

    return resolve


def _reconstruct():
    # numpy >= 2 moved the pickling helpers to numpy._core; numpy.core still resolves but warns.
    from numpy._core import multiarray

    return multiarray._reconstruct


def _frombuffer():
    from numpy._core import numeric

    return numeric._frombuffer


def _codecs_encode():
    import codecs

    return codecs.encode


# Every global a release pickle may name, and what it resolves to. Anything else is refused.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    # Protocol-5 pickles of numpy >= 1.16 arrays rebuild through _frombuffer instead of _reconstruct.
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _numpy_attr("ndarray"),
    ("numpy", "dtype"): _numpy_attr("dtype"),
    # bfloat16 scales are ml_dtypes arrays; the dtype is pickled by its scalar type's module path.
    ("ml_dtypes", "bfloat16"): _bfloat16,
    ("ml_dtypes._ml_dtypes_ext", "bfloat16"): _bfloat16,
    ("ml_dtypes._custom_floats", "bfloat16"): _bfloat16,
    ("jax.numpy", "bfloat16"): _bfloat16,
    # Protocol < 3 pickles spell bytes as _codecs.encode(str, "latin1"); it only converts text to bytes.
    ("_codecs", "encode"): _codecs_encode,
    # checkpoint.py puts the class in __main__ before unpickling; we map it to our inert dataclass.
    ("__main__", "QuantizedWeight8bit"): lambda: QuantizedWeight8bit,
    ("model", "QuantizedWeight8bit"): lambda: QuantizedWeight8bit,
}


class ReleaseUnpickler(pickle.Unpickler):
    """Unpickler that resolves only `_ALLOWED_GLOBALS`; `source` names the file in errors."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        resolve = _ALLOWED_GLOBALS.get((module, name))
        if resolve is None:
            raise UnsafeCheckpointError(
                f"{self.source}: pickle references forbidden global {module}.{name}; refusing to load it "
                "(a Grok-1 release file holds only numpy arrays and QuantizedWeight8bit). "
                "Re-download the file from a trusted source."
            )
        return resolve()

    def persistent_load(self, pid):
        raise UnsafeCheckpointError(f"{self.source}: pickle uses persistent ids ({pid!r}); refusing to load it")


def safe_loads(data: bytes, source: str = "<bytes>"):
    """Unpickle `data` allowing only what the release format needs."""
    return ReleaseUnpickler(io.BytesIO(data), source).load()


def load_tensor_file(path: str | Path) -> np.ndarray | QuantizedWeight8bit:
    """Read one release file: a numpy array or a QuantizedWeight8bit (checked to hold numpy arrays)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointFormatError(f"missing checkpoint file {path}; the checkpoint is incomplete, re-download it")
    with path.open("rb") as f:
        obj = ReleaseUnpickler(f, str(path)).load()
    if isinstance(obj, QuantizedWeight8bit):
        if not (isinstance(obj.weight, np.ndarray) and isinstance(obj.scales, np.ndarray)):
            raise CheckpointFormatError(f"{path}: QuantizedWeight8bit does not hold numpy arrays")
        if obj.weight.ndim != obj.scales.ndim:
            raise CheckpointFormatError(
                f"{path}: weight {obj.weight.shape} and scales {obj.scales.shape} differ in rank"
            )
        return obj
    if not isinstance(obj, np.ndarray):
        raise CheckpointFormatError(f"{path}: expected a numpy array or QuantizedWeight8bit, got {type(obj).__name__}")
    return obj


def read_tensor(checkpoint_dir: str | Path, index: int, shard: int = 0) -> np.ndarray | QuantizedWeight8bit:
    """Read parameter `index` of the checkpoint directory `checkpoint_dir` (the `ckpt-0` folder)."""
    return load_tensor_file(Path(checkpoint_dir) / tensor_filename(index, shard))


def tensor_shape(obj: np.ndarray | QuantizedWeight8bit) -> tuple[int, ...]:
    return tuple(obj.shape)


def dequantize(obj: np.ndarray | QuantizedWeight8bit, dtype=np.float32) -> np.ndarray:
    """The float value of a release tensor (weight * scales for quantised ones), in `dtype`."""
    if not isinstance(obj, QuantizedWeight8bit):
        return np.asarray(obj).astype(dtype, copy=False)
    weight, scales = obj.weight, obj.scales
    if weight.ndim < 2:
        raise CheckpointFormatError(f"quantised weight must be at least 2-D, got shape {weight.shape}")
    *lead, rows, cols = weight.shape
    groups = scales.shape[-2]
    if tuple(scales.shape[:-2]) != tuple(lead) or scales.shape[-1] != cols or rows % groups:
        raise CheckpointFormatError(f"scales {scales.shape} do not fit weight {weight.shape}")
    # Scales group the input axis into `groups` contiguous blocks, one scale row per block.
    blocked = weight.astype(dtype).reshape(*lead, groups, rows // groups, cols)
    out = blocked * scales.astype(dtype).reshape(*lead, groups, 1, cols)
    return out.reshape(weight.shape)
