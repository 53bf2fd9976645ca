"""Custom Keras objects for loading a model: a user's module or file, and keras.applications'.

A saved Keras model names each layer by class; a class Keras does not know (a user's own
layer, or one of the few that ``keras.applications`` defines without registering, such as
ConvNeXt's ``LayerScale``) must be handed to the loader. :func:`load_custom_objects` turns
what a user passes (``--custom_objects my_layers.py``, ``pkg.module``, or a dict in Python)
into the ``custom_objects`` mapping of ``keras.models.load_model``;
:func:`application_custom_objects` lists the keras.applications layers, which
:func:`tfquant.convert.load_model` always adds. :func:`unresolved_class_names` finds the
classes a saved model names that Keras cannot resolve, so a failed load can name them.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import sys
import types
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

from tfquant import _env  # noqa: F401  (must run before TensorFlow is imported)

import tf_keras as keras

from tfquant.errors import TfquantError

#: What ``custom_objects=`` accepts: a dict, a .py file path, a module name, or None.
CustomObjectsSpec = Mapping[str, Any] | str | os.PathLike | None

# Kinds of class a saved model can name besides layers and models.
_KERAS_BASES: tuple[type, ...] = (
    keras.layers.Layer,
    keras.initializers.Initializer,
    keras.regularizers.Regularizer,
    keras.constraints.Constraint,
)

# Serialization markers of the .keras format that are not classes.
_NOT_CLASSES = {
    "function", "__tensor__", "__numpy__", "__typespec__", "__lambda__", "__bytes__",
    "__ellipsis__", "__slice__", "TensorShape", "DTypePolicy", "Policy", "TypeSpec",
}


def _one_line(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def application_custom_objects() -> dict[str, Any]:
    """The layers keras.applications (tf-keras 2.21) defines without registering them.

    ConvNeXt's ``LayerScale`` and ``StochasticDepth`` (the latter only with
    ``drop_path_rate > 0``), and InceptionResNetV2's ``CustomScaleLayer`` (registered as
    ``Custom>CustomScaleLayer``, but only once its module has been imported).
    """
    from tfquant.tflite.keras_internals import application_layers

    layers = application_layers()
    scale = layers["CustomScaleLayer"]
    return {
        "LayerScale": layers["LayerScale"],
        "StochasticDepth": layers["StochasticDepth"],
        "CustomScaleLayer": scale,
        "Custom>CustomScaleLayer": scale,
    }


def _module_from_file(path: Path) -> types.ModuleType:
    """Imports a .py file as a module (registered in sys.modules, so dataclasses work)."""
    name = f"tfquant_custom_objects.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TfquantError(
            f"custom objects file {str(path)!r} cannot be imported as Python; pass a .py file "
            "that defines the layers"
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # whatever the user's code raises
        sys.modules.pop(name, None)
        raise TfquantError(
            f"could not import custom objects file {str(path)!r} ({type(e).__name__}: "
            f"{_one_line(e)}); fix the error in that file"
        ) from None
    return module


def _import_module(name: str) -> types.ModuleType:
    """Imports ``pkg.module``; also from the working directory (not on sys.path for scripts)."""
    try:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            top = name.split(".")[0]
            if e.name not in (top, name) or os.getcwd() in sys.path:
                raise
            sys.path.insert(0, os.getcwd())
            return importlib.import_module(name)
    except Exception as e:  # ImportError, or whatever the user's code raises
        raise TfquantError(
            f"could not import custom objects module {name!r} ({type(e).__name__}: "
            f"{_one_line(e)}); pass an importable module (pkg.module) or a .py file path"
        ) from None


def _defined_objects(module: types.ModuleType, registered: Mapping[str, Any]) -> dict[str, Any]:
    """Keras classes and public functions ``module`` defines, plus what it registered."""
    found: dict[str, Any] = {}
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__ or name.startswith("_"):
            continue
        if inspect.isclass(obj) and issubclass(obj, _KERAS_BASES):
            found[name] = obj
        elif inspect.isfunction(obj):
            found[name] = obj
    for key, obj in registered.items():
        found[key] = obj
        found.setdefault(getattr(obj, "__name__", key), obj)
    extra = getattr(module, "CUSTOM_OBJECTS", None)
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise TfquantError(
                f"CUSTOM_OBJECTS in {module.__name__!r} is a {type(extra).__name__}; make it a "
                "dict of name -> class or function"
            )
        found.update(_check_mapping(extra, f"CUSTOM_OBJECTS in {module.__name__!r}"))
    return found


def _check_mapping(objects: Mapping[Any, Any], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in objects.items():
        if not isinstance(key, str) or not callable(value):
            raise TfquantError(
                f"{what} maps {key!r} to {type(value).__name__}; map each class name (str) to "
                "the class or function itself"
            )
        out[key] = value
    return out


def load_custom_objects(spec: CustomObjectsSpec) -> dict[str, Any]:
    """The ``custom_objects`` mapping that ``spec`` describes.

    Args:
      spec: None (no custom objects); a mapping of class / function name -> the object; a
        path to a Python file (``my_layers.py``); or an importable module (``pkg.module``,
        also looked up in the working directory). From a module or file it takes every
        Keras Layer / Model (and initializer, regularizer, constraint) subclass and every
        public function it defines, everything it registers with
        ``keras.utils.register_keras_serializable`` (under the registered name and the
        class name), and the entries of a module-level dict ``CUSTOM_OBJECTS`` if present.

    Returns:
      A new dict name -> class or function.

    Raises:
      TfquantError: the file does not exist, the module cannot be imported (the message
        quotes the exception), it defines no Keras class or function, or a mapping holds
        something that is not a class or function.
    """
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return _check_mapping(spec, "custom_objects")
    if not isinstance(spec, (str, os.PathLike)):
        raise TfquantError(
            f"custom_objects must be a dict, a .py file path or a module name, got "
            f"{type(spec).__name__}"
        )
    text = os.fspath(spec)
    path = Path(text)
    looks_like_file = text.endswith(".py") or os.sep in text or "/" in text
    registry = keras.saving.get_custom_objects()
    before = dict(registry)
    if path.is_file():
        module = _module_from_file(path)
    elif looks_like_file or not text:
        raise TfquantError(
            f"custom objects file {text!r} does not exist; pass the .py file that defines the "
            "layers, or an importable module name (pkg.module)"
        )
    else:
        module = _import_module(text)
    registered = {k: v for k, v in registry.items() if before.get(k) is not v}
    found = _defined_objects(module, registered)
    if not found:
        raise TfquantError(
            f"custom objects {text!r} define no Keras layer, model or function; define or "
            "import the custom classes there (or list them in a dict CUSTOM_OBJECTS)"
        )
    return found


# --- which classes of a saved model Keras cannot resolve ------------------------------

def saved_model_config(path: "str | os.PathLike[str]") -> Any:
    """The model config stored in a .keras / .h5 file or a Keras SavedModel dir, or None."""
    p = Path(path)
    try:
        if p.is_dir():
            return _savedmodel_configs(p)
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as z:
                return json.loads(z.read("config.json"))
        import h5py

        with h5py.File(p, "r") as f:
            raw = f.attrs.get("model_config")
        if raw is None:
            return None
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except Exception:  # a corrupt file: the caller reports the load error itself
        return None


def _savedmodel_configs(path: Path) -> Any:
    """The Keras metadata of every object of a Keras SavedModel (keras_metadata.pb)."""
    from tf_keras.protobuf import saved_metadata_pb2

    meta = saved_metadata_pb2.SavedMetadata()
    meta.ParseFromString((path / "keras_metadata.pb").read_bytes())
    return [json.loads(node.metadata) for node in meta.nodes]


def _class_names(config: Any) -> Iterator[str]:
    """Every class and function name in a (nested) Keras config.

    Classes are ``{"class_name": ..., "registered_name": ...}`` entries; functions are
    ``{"class_name": "function", "config": NAME}`` (.keras format) or a plain string under
    an ``activation`` key (HDF5 / legacy format).
    """
    if isinstance(config, dict):
        name = config.get("class_name")
        if name == "function" and isinstance(config.get("config"), str):
            yield config["config"]
        elif isinstance(name, str):
            yield config.get("registered_name") or name
        for key, value in config.items():
            if key in ("activation", "recurrent_activation") and isinstance(value, str):
                yield value
            else:
                yield from _class_names(value)
    elif isinstance(config, list):
        for value in config:
            yield from _class_names(value)


def _builtin_names() -> set[str]:
    """Class names Keras resolves by itself (layers, models, initializers, ...)."""
    from tfquant.tflite.keras_internals import builtin_layer_names

    names = builtin_layer_names()
    for module in (
        keras.initializers, keras.regularizers, keras.constraints, keras.optimizers,
        keras.losses, keras.metrics, keras.layers, keras.models, keras.mixed_precision,
    ):
        names.update(n for n, obj in vars(module).items() if inspect.isclass(obj))
    names.update(n for n, obj in vars(keras.activations).items() if callable(obj))
    return names | {"Functional", "Sequential", "Model", "TFOpLambda", "SlicingOpLambda"}


def unresolved_class_names(
    path: "str | os.PathLike[str]", custom_objects: Mapping[str, Any] | None = None
) -> list[str]:
    """Class and function names in a saved model's config that Keras cannot resolve, sorted.

    A name resolves if it is a Keras built-in, is registered
    (``keras.utils.register_keras_serializable``), or is a key of ``custom_objects``; a
    registered name ``package>Class`` also resolves through its ``Class`` part in
    ``custom_objects``, as Keras does. Empty when the config cannot be read.
    """
    config = saved_model_config(path)
    if config is None:
        return []
    known = _builtin_names() | set(custom_objects or {}) | set(keras.saving.get_custom_objects())
    missing = set()
    for name in _class_names(config):
        if name.startswith("__") or name in _NOT_CLASSES:  # serialization markers
            continue
        if name in known or name.split(">")[-1] in known:
            continue
        missing.add(name.split(">")[-1] or name)  # "package>Class": name the class
    return sorted(missing)


def named_in_keras_error(message: str) -> list[str]:
    """Class or function names a Keras load error says it could not find."""
    import re

    patterns = (
        r"Unknown (?:layer|object|class|activation function|initializer|regularizer|"
        r"constraint|loss|metric)(?: function)?: '?([\w>.]+)'?",
        r"Could not locate (?:class|function) '([\w>.]+)'",
    )
    names: list[str] = []
    for pattern in patterns:
        names += re.findall(pattern, message)
    return sorted(set(names) - _NOT_CLASSES)

