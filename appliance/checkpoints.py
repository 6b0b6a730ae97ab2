"""Reading an uploaded ultralytics `.pt` checkpoint without running its code.

A `.pt` file is a zip (torch's format since 1.6) holding `data.pkl`, a pickle
of the checkpoint dict, and one file per tensor storage. Unpickling runs any
callable the pickle names, so `torch.load(weights_only=False)` on an upload
would let its author run code here. We do not call `torch.load` at all: a
`pickle.Unpickler` subclass reads `data.pkl` and its `find_class` resolves a
short allow-list, and nothing else:

* `collections.OrderedDict`, the builtin containers `set`/`frozenset` and
  `torch.Size` (read as a tuple);
* torch's tensor and parameter rebuild functions and storage types, which are
  replaced by our own functions that return a `TensorInfo` (the shape only:
  no storage is read, no torch code runs);
* names from `ultralytics.*` and `torch.nn.modules.*` (and
  `types.SimpleNamespace`), which are replaced by inert placeholder classes
  (`Stub`): the real classes and functions are never imported nor called, and
  a placeholder only stores what the pickle hands it; `pathlib` paths are
  read as text;
* `getattr`, replaced by a function that accepts only a placeholder and a
  public method name and returns a `MethodRef` (fused layers pickle
  `forward = getattr(layer, "forward_fuse")`); nothing is looked up.

Any other global (`os.system`, `builtins.eval`, `subprocess.Popen`, ...) stops
the read with `UnsafeCheckpoint` before anything is called. We chose this over
`torch.load(weights_only=True)` with safe globals because that loader would
still have to import and construct the ultralytics module classes to rebuild
the model, while this reader never imports ultralytics nor torch and reads a
5 MB checkpoint in milliseconds. The tensors' shapes are enough to check the
class names against the detection (or classification) head.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The largest `data.pkl` read (the object graph, not the tensor data).
MAX_PICKLE_BYTES = 64 * 1024 * 1024
TASKS = ("detect", "segment", "pose", "obb", "classify")
_MODEL_TASKS = {
    "DetectionModel": "detect",
    "SegmentationModel": "segment",
    "PoseModel": "pose",
    "OBBModel": "obb",
    "ClassificationModel": "classify",
}
#: Modules whose classes a checkpoint may name (model layers); each becomes an
#: inert placeholder. Only classes (capitalised names) — never a function, which a
#: later full load would call — and only rebuilt the way pickle rebuilds objects.
_PLACEHOLDER_MODULES = ("ultralytics.nn.", "torch.nn.modules.")
_PLACEHOLDER_CLASSES = frozenset({("ultralytics.utils", "IterableSimpleNamespace")})


class BadCheckpoint(ValueError):
    """The file is not a checkpoint this appliance can use."""


class UnsafeCheckpoint(BadCheckpoint):
    """The pickle names a global outside the allow-list."""


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the pickle describes it: its shape only."""

    shape: tuple[int, ...]


class Stub:
    """An inert stand-in for a module class named by the pickle. It keeps the
    arguments and state it is given and has no behaviour of its own."""

    qualname = "Stub"

    def __new__(cls, *args: Any, **kwargs: Any) -> Stub:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Pickle makes model layers without calling them (NEWOBJ, then BUILD); a
        # namespace is called with no arguments. A call with arguments is a
        # pickle using a class as a function: refused.
        if args or kwargs:
            raise UnsafeCheckpoint(
                f"the checkpoint's pickle calls {type(self).qualname} with arguments,"
                " which is not allowed; nothing in it was run"
            )


def _rebuild_tensor(storage: Any, offset: Any, size: Any, *rest: Any) -> TensorInfo:
    if not isinstance(size, tuple | list) or not all(isinstance(n, int) for n in size):
        raise BadCheckpoint("a tensor in the checkpoint has no valid shape")
    return TensorInfo(tuple(size))


def _rebuild_parameter(data: Any, *rest: Any) -> Any:
    return data


@dataclass(frozen=True)
class MethodRef:
    """A module's bound method named by the pickle (a fused layer keeps
    `forward = getattr(layer, "forward_fuse")`): the name only."""

    owner: str
    name: str


def _method_reference(owner: Any, name: Any) -> MethodRef:
    """`getattr` as a pickle may use it: only a public method name of a
    placeholder, answered with a reference; nothing is looked up."""
    if not isinstance(owner, Stub) or not isinstance(name, str):
        raise UnsafeCheckpoint(
            "the checkpoint's pickle calls getattr on something other than a"
            " model layer, which is not allowed; nothing in it was run"
        )
    if not name.isidentifier() or name.startswith("_"):
        raise UnsafeCheckpoint(
            f"the checkpoint's pickle asks for attribute {name[:40]!r}, which is"
            " not allowed; nothing in it was run"
        )
    return MethodRef(type(owner).qualname, name)


def _set(items: Any = ()) -> set:
    return set(items)


def _path_text(*parts: Any) -> str:
    """A path the uploader's machine pickled, as text (a path longer than any
    file system allows is a crafted one)."""
    if sum(len(part) for part in parts if isinstance(part, str)) > 4096:
        raise BadCheckpoint("the checkpoint holds a path longer than 4096 characters")
    text = "/".join(part for part in parts if isinstance(part, str))
    return text[1:] if text.startswith("//") else text


def _tuple(items: Any = ()) -> tuple:
    return tuple(items)


def _frozenset(items: Any = ()) -> frozenset:
    return frozenset(items)


class _NumpyDType:
    """numpy.dtype as a pickle rebuilds it: its type code only."""

    def __init__(self, code: Any = "", *rest: Any) -> None:
        self.code = code if isinstance(code, str) else ""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in "<>|=":
            self.order = state[1]


class _NumpyArray:
    """A numpy array in a checkpoint (a metrics curve): kept as nothing."""

    def __init__(self, *args: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


_SCALAR_FORMATS = {"f8": "d", "f4": "f", "f2": "e", "i8": "q", "i4": "i", "b1": "?"}


def _numpy_scalar(dtype: Any, data: Any = b"") -> float | int | bool | None:
    """A numpy scalar (a metric ultralytics saved as np.float64): decoded from
    its bytes for the few plain number types, else dropped."""
    if isinstance(data, str):  # protocol 2 pickles bytes as latin-1 text
        data = data.encode("latin-1")
    code = getattr(dtype, "code", "")
    fmt = _SCALAR_FORMATS.get(code)
    if fmt is None or not isinstance(data, bytes):
        return None
    order = ">" if getattr(dtype, "order", "<") == ">" else "<"
    try:
        return struct.unpack(order + fmt, data)[0]
    except struct.error:
        return None


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    """`_codecs.encode`, which protocol-2 pickles use to carry bytes as text;
    only that use (latin-1) is answered."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpoint("the checkpoint's pickle encodes text in an unknown way")
    return text.encode("latin-1")


def _numpy_array(*args: Any) -> _NumpyArray:
    return _NumpyArray()


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "dtype"): _NumpyDType,
    ("_codecs", "encode"): _latin1,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_array,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_array,
    ("numpy", "ndarray"): _numpy_array,
    ("collections", "OrderedDict"): dict,
    ("builtins", "set"): _set,
    ("__builtin__", "set"): _set,
    ("builtins", "frozenset"): _frozenset,
    ("__builtin__", "frozenset"): _frozenset,
    ("torch", "Size"): _tuple,
    ("types", "SimpleNamespace"): None,  # a placeholder, set in find_class
    ("pathlib", "PosixPath"): _path_text,
    ("pathlib", "WindowsPath"): _path_text,
    ("builtins", "getattr"): _method_reference,
    ("__builtin__", "getattr"): _method_reference,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}
_DTYPES = frozenset(
    {"float16", "float32", "float64", "bfloat16", "int64", "int32", "uint8", "bool"}
)


class _Unpickler(pickle.Unpickler):
    """Everything `find_class` hands out is made for this one read (a fresh
    function or placeholder class), so a pickle that sets attributes on what
    it gets (BUILD) changes nothing that outlives the read."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self._stubs: dict[str, type[Stub]] = {}

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name), False)
        if allowed:
            return lambda *args: allowed(*args)
        if module == "torch" and (name.endswith("Storage") or name in _DTYPES):
            return name  # only ever an argument: a storage type or dtype by name
        placeholder = (
            allowed is None
            or (module, name) in _PLACEHOLDER_CLASSES
            or (module.startswith(_PLACEHOLDER_MODULES) and name[:1].isupper())
        )
        if placeholder and name.isidentifier():
            qualname = f"{module}.{name}"
            if qualname not in self._stubs:
                self._stubs[qualname] = type(name, (Stub,), {"qualname": qualname})
            return self._stubs[qualname]
        raise UnsafeCheckpoint(
            f"the checkpoint's pickle calls {module}.{name}, which is not allowed;"
            " nothing in it was run"
        )

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and pid and pid[0] == "storage":
            return ("storage", str(pid[2]) if len(pid) > 2 else "")
        raise BadCheckpoint("the checkpoint refers to storage in an unknown form")


@dataclass
class Checkpoint:
    """What the appliance takes from a checkpoint."""

    task: str
    class_names: list[str]
    head_classes: int
    train_args: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    epoch: int | None = None
    best_fitness: float | None = None
    date: str | None = None
    version: str | None = None
    #: Per-epoch metrics from the checkpoint's results table: (epoch, metrics).
    results: list[tuple[int, dict[str, float]]] = field(default_factory=list)


def read_pickle(path: Path) -> dict[str, Any]:
    """The checkpoint dict, with module objects as `Stub`s and tensors as
    `TensorInfo`s."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise BadCheckpoint(
            "not a PyTorch zip checkpoint (save it with torch 1.6 or newer)"
        ) from None
    with archive:
        names = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(names) != 1 or names[0].count("/") != 1:
            raise BadCheckpoint("the zip holds no torch checkpoint (data.pkl)")
        info = archive.getinfo(names[0])
        if info.file_size > MAX_PICKLE_BYTES:
            raise BadCheckpoint("the checkpoint's object graph is too large")
        try:
            data = archive.read(info)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as exc:
            raise BadCheckpoint(f"the checkpoint's zip is damaged ({exc})") from None
    try:
        loaded = _Unpickler(io.BytesIO(data)).load()
    except BadCheckpoint:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        KeyError,
        RecursionError,
        MemoryError,
    ) as exc:
        raise BadCheckpoint(f"the checkpoint's pickle is damaged ({exc})") from None
    if not isinstance(loaded, dict):
        raise BadCheckpoint("the checkpoint is not a dict of model and metadata")
    return loaded


def read_checkpoint(path: Path) -> Checkpoint:
    """Read and check an ultralytics checkpoint; BadCheckpoint says why not.
    Nothing in the file runs, so any failure to make sense of it is the file's
    fault: a crafted structure the checks below did not foresee is refused too."""
    try:
        return _read_checkpoint(path)
    except BadCheckpoint:
        raise
    except (
        ArithmeticError,
        AttributeError,
        KeyError,
        IndexError,
        TypeError,
        ValueError,
    ) as exc:
        logger.info("checkpoint %s refused: %r", path.name, exc)
        raise BadCheckpoint(
            f"the checkpoint's contents are not an ultralytics model's ({exc.__class__.__name__})"
        ) from None


def _read_checkpoint(path: Path) -> Checkpoint:
    ckpt = read_pickle(path)
    model = ckpt.get("model") or ckpt.get("ema")
    if not isinstance(model, Stub):
        raise BadCheckpoint("the checkpoint holds no ultralytics model")
    train_args = (
        ckpt.get("train_args") if isinstance(ckpt.get("train_args"), dict) else {}
    )
    task = _task(model, train_args)
    names = _class_names(model)
    head = _head_classes(model)
    if len(names) != head:
        raise BadCheckpoint(
            f"the checkpoint names {len(names)} classes but its {task} head"
            f" predicts {head}: class names and weights disagree"
        )
    return Checkpoint(
        task=task,
        class_names=names,
        head_classes=head,
        train_args=_plain(train_args),
        metrics=_numbers(ckpt.get("train_metrics")),
        epoch=_int(ckpt.get("epoch")),
        best_fitness=_float(ckpt.get("best_fitness")),
        date=_date(ckpt.get("date")),
        version=ckpt.get("version") if isinstance(ckpt.get("version"), str) else None,
        results=_results(ckpt.get("train_results")),
    )


def _results(table: Any) -> list[tuple[int, dict[str, float]]]:
    """ultralytics' results table (column name to one value per epoch) as
    rows; an epoch column counts from 1 there, from 0 here."""
    if not isinstance(table, dict) or not isinstance(table.get("epoch"), list):
        return []
    epochs = table["epoch"][:1_000]
    columns = [
        (name, column)
        for name, column in list(table.items())[: MAX_METRICS + 1]
        if name != "epoch" and isinstance(column, list)
    ]
    rows = []
    for i, epoch in enumerate(epochs):
        number = _finite(epoch)
        if number is None or not 0 <= number <= MAX_EPOCH:
            return []
        values = {name: column[i] for name, column in columns if i < len(column)}
        rows.append((max(int(number) - 1, 0), _numbers(values)))
    return rows


def _task(model: Stub, train_args: dict) -> str:
    from_class = _MODEL_TASKS.get(type(model).__name__)
    task = from_class or train_args.get("task")
    if task not in TASKS:
        raise BadCheckpoint("the checkpoint's task is unknown")
    if from_class and train_args.get("task") not in (None, from_class):
        raise BadCheckpoint(
            f"the checkpoint's train_args say task {train_args['task']!r}"
            f" but its model is a {from_class} model"
        )
    return task


def _class_names(model: Stub) -> list[str]:
    names = model.__dict__.get("names")
    if isinstance(names, dict):
        keys = sorted(k for k in names if isinstance(k, int))
        if keys != list(range(len(names))):
            raise BadCheckpoint("the checkpoint's class names are not numbered 0..n-1")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise BadCheckpoint("the checkpoint has no class names")
    if not all(isinstance(n, str) and n.strip() and len(n) <= 100 for n in names):
        raise BadCheckpoint(
            "the checkpoint's class names must be short, non-empty text"
        )
    return names


def _children(module: Any) -> list[Any]:
    modules = module.__dict__.get("_modules") if isinstance(module, Stub) else None
    return list(modules.values()) if isinstance(modules, dict) else []


def _weight_rows(module: Any) -> int | None:
    params = module.__dict__.get("_parameters") if isinstance(module, Stub) else None
    weight = params.get("weight") if isinstance(params, dict) else None
    if isinstance(weight, TensorInfo) and weight.shape:
        return weight.shape[0]
    return None


def _head_classes(model: Stub) -> int:
    """The number of classes the last layer predicts, from its tensor shapes:
    the last convolution of each class branch (`cv3`) of a detection head, or
    the linear layer of a classification head."""
    layers = _children(model)
    sequence = _children(layers[0]) if layers else []
    if not sequence:
        raise BadCheckpoint("the checkpoint's model has no layers")
    head = sequence[-1]
    counts = set()
    for branch_name in ("cv3", "one2one_cv3"):
        branch = head.__dict__.get("_modules", {}).get(branch_name)
        for scale in _children(branch):
            last = _children(scale)[-1] if _children(scale) else scale
            rows = _weight_rows(last)
            if rows is not None:
                counts.add(rows)
    linear = head.__dict__.get("_modules", {}).get("linear")
    if not counts and linear is not None and _weight_rows(linear) is not None:
        counts.add(_weight_rows(linear))
    if len(counts) != 1:
        raise BadCheckpoint("the checkpoint's head has no consistent class layer")
    return counts.pop()


#: The most values copied out of a checkpoint's train arguments: a pickle can
#: share one list many times over, which a naive walk would expand without end.
MAX_VALUES = 10_000


def _plain(value: Any, depth: int = 0, budget: list[int] | None = None) -> Any:
    """JSON-safe copy of plain data; anything else (stubs, tensors) is dropped."""
    budget = [MAX_VALUES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise BadCheckpoint("the checkpoint's train arguments are too large")
    if depth > 5:
        return _DROP
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            item = _plain(v, depth + 1, budget)
            if isinstance(k, str) and item is not _DROP:
                out[k] = item
        return out
    if isinstance(value, list | tuple):
        items = (_plain(x, depth + 1, budget) for x in value)
        return [v for v in items if v is not _DROP]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else _DROP
    if isinstance(value, str):
        return value if len(value) <= 4096 else _DROP
    if isinstance(value, float):
        return value if math.isfinite(value) else _DROP
    return _DROP


_DROP = object()


#: Metrics kept per checkpoint (a table of metrics per epoch has this many
#: columns at most; a real one has a dozen).
MAX_METRICS = 100
#: Epoch numbers above this are not a training run's.
MAX_EPOCH = 100_000


def _finite(value: Any) -> float | None:
    """A plain, finite number that fits a float, or None."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if isinstance(value, int) and abs(value) > 2**63:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _numbers(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    out = {}
    for k, v in list(value.items())[: MAX_METRICS * 10]:
        number = _finite(v)
        if isinstance(k, str) and len(k) <= 100 and number is not None:
            out[k] = number
        if len(out) >= MAX_METRICS:
            break
    return out


def _int(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    return value if ok and 0 <= value <= MAX_EPOCH else None


def _float(value: Any) -> float | None:
    return _finite(value)


def _date(value: Any) -> str | None:
    """The checkpoint's save date when it is a real ISO date and time."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = datetime.fromisoformat(value)
        if when.tzinfo is not None:
            when.astimezone(UTC)  # an offset that pushes it out of range fails here
    except (ValueError, OverflowError):
        return None
    return value if 1970 <= when.year <= 9999 else None
