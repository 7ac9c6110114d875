"""Cuts Beam's fixed per-run cost and a peak-memory copy on the local runner; the pipeline's results
do not change.

A small run pays mostly for Beam itself. The profile of 3,842 rows (68 s) showed these avoidable
costs:

* **The Prism attempt.** Beam 2.72's ``DirectRunner`` first tries the Prism runner: it converts the
  whole graph to protos (~8 s for our ~2,500 transforms), tries to download a Go binary from GitHub
  (offline: fails; online: the run moves to a different runner), then falls back to the
  ``FnApiRunner``. ``local_runner`` builds that ``FnApiRunner`` directly, as the ``DirectRunner``
  does, so every run uses the same runner whether or not the machine can reach GitHub.
* **Option views.** ``PipelineOptions.view_as`` re-parses the flags with a fresh argparse parser on
  every call, about twice per transform (~4 s); ``memoised_option_views`` reuses views.
* **DoFn signature inspection.** ``userstate.get_dofn_specs`` (is this DoFn stateful? which
  timers?) calls ``inspect.signature`` on every method of the DoFn (~30), and Beam asks ~13 times
  per ParDo while building, translating and executing the graph: 7,812 calls, ~20 s.
  ``memoised_dofn_specs`` answers repeated questions from a per-class cache.

A large run's peak memory (1M rows, RSS sampled with stack dumps) showed one more:

* **Stage inputs copied three times.** In ``in_memory`` mode a stage's whole input goes to the worker
  in one message: ``BundleManager._send_input_to_worker`` concatenates every buffered chunk into one
  stream, copies that into ``bytes`` and the bytes into a protobuf, while the chunks stay buffered.
  For the 1M-row run's training batches (~0.6 GB encoded) that was the run's peak (4.1 GB).
  ``chunked_stage_inputs`` hands each chunk over as its own ``Elements.Data`` (one copy); the worker
  decodes the same elements in the same order (every chunk holds whole elements: it is one earlier
  bundle's output), so the pipeline's results are the same.

Why the cache is exact: ``get_dofn_specs`` looks at ``dir(dofn)``, keeps the attributes that are
bound methods and reads their signatures' defaults (StateParam/TimerParam). For an instance whose
class resolves attributes the ordinary way (no ``__getattr__``/``__getattribute__``/``__dir__``,
no properties or other instance-dependent descriptors), whose ``__dict__`` holds no bound methods
and no ``_inspect_*`` hooks, the bound methods are the class's functions, so the answer depends on
the class and on which of its methods the instance shadows with plain attributes (``beam.Map``
sets ``self.process = fn``), and both are in the cache key. Anything else is passed through to
Beam's own function uncached, and so is every error Beam raises (nothing failing is cached).

The patches are installed only while our pipeline runs (context managers, reference-counted), never
at import.
"""
from __future__ import annotations

import contextlib
import threading
import types
import weakref
from typing import Dict, FrozenSet, Optional, Tuple

_UNCACHEABLE = object()
_lock = threading.Lock()


class _Patch:
    """Replaces ``owner.name`` with ``replacement`` while at least one ``active()`` is open: nested and
    concurrent uses share one install, and the outermost exit restores Beam's own function (kept in
    ``original`` once seen, so a stale reference to the patch still works)."""

    def __init__(self, replacement, on_release=None):
        self.replacement, self.on_release = replacement, on_release
        self.depth, self.original = 0, None   # guarded by _lock

    @contextlib.contextmanager
    def active(self, owner, name: str):
        with _lock:
            if self.depth == 0:
                current = getattr(owner, name)
                if current is not self.replacement:
                    self.original = current
                setattr(owner, name, self.replacement)
            self.depth += 1
        try:
            yield
        finally:
            with _lock:
                self.depth -= 1
                if self.depth == 0:
                    setattr(owner, name, self.original)
                    if self.on_release:
                        self.on_release()


# class -> (its method names, or _UNCACHEABLE) and class -> {shadowed method names -> specs}
_class_methods: "weakref.WeakKeyDictionary[type, object]" = weakref.WeakKeyDictionary()
_specs: "weakref.WeakKeyDictionary[type, Dict[FrozenSet[str], Tuple[frozenset, frozenset]]]" = \
    weakref.WeakKeyDictionary()
stats = {"hits": 0, "misses": 0, "uncached": 0,   # for tests and profiling
         "input_sends": 0, "input_chunks": 0}


def _static_kind(cls: type, name: str) -> Optional[str]:
    """'method' when ``getattr(instance, name)`` is a bound method fixed by the class, 'other' when it
    is never a bound method whatever the instance holds, None when only the instance can say (a
    descriptor such as a property, a ``__slots__`` member)."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            attr = klass.__dict__[name]
            break
    else:
        return "other"
    if isinstance(attr, (types.FunctionType, classmethod, types.MethodType)):
        return "method"
    if isinstance(attr, (staticmethod, types.BuiltinFunctionType, types.WrapperDescriptorType,
                         types.MethodDescriptorType, types.MethodWrapperType, types.ClassMethodDescriptorType,
                         type)):
        return "other"   # C-level methods and nested classes: never a bound Python method
    if isinstance(attr, types.GetSetDescriptorType) and name in ("__class__", "__dict__", "__weakref__"):
        return "other"
    if not hasattr(type(attr), "__get__"):
        return "other"   # plain data
    return None


def _methods_of(cls: type):
    """(names that are bound methods on every instance, names only an instance can answer for, methods
    with an ``_inspect_`` hook), or _UNCACHEABLE when the class resolves attributes its own way."""
    cached = _class_methods.get(cls)
    if cached is not None:
        return cached
    result: object = _UNCACHEABLE
    if (cls.__getattribute__ is object.__getattribute__ and cls.__dir__ is object.__dir__
            and not hasattr(cls, "__getattr__")):
        names = dir(cls)
        kinds = {name: _static_kind(cls, name) for name in names}
        methods = frozenset(n for n, k in kinds.items() if k == "method")
        dynamic = tuple(n for n, k in kinds.items() if k is None)
        # an _inspect_<name> hook answers for <name> from the instance's state (CallableWrapperDoFn's
        # process); such a method is cacheable only where the instance hides it (beam.Map: self.process = fn)
        hooked = frozenset(m for m in methods if f"_inspect_{m}" in kinds)
        result = (methods, dynamic, hooked)
    _class_methods[cls] = result
    return result


def _cache_key(dofn) -> Optional[FrozenSet[str]]:
    """The class's methods that this instance hides with plain attributes; None when not cacheable."""
    found = _methods_of(type(dofn))
    own = getattr(dofn, "__dict__", None)
    if found is _UNCACHEABLE or own is None:
        return None
    methods, dynamic, hooked = found
    shadowed = []
    for name, value in own.items():
        if isinstance(value, types.MethodType) or name.startswith("_inspect_"):
            return None
        if name in methods:
            shadowed.append(name)
    for name in dynamic:   # what get_dofn_specs itself would read: a bound method here is instance state
        if isinstance(getattr(dofn, name, None), types.MethodType):
            return None
    if not hooked.issubset(shadowed):
        return None
    return frozenset(shadowed)


def _memoised(dofn):
    """Drop-in for ``userstate.get_dofn_specs`` (same result, fresh sets each call)."""
    original = _specs_patch.original
    key = _cache_key(dofn)
    if key is None:
        stats["uncached"] += 1
        return original(dofn)
    per_class = _specs.setdefault(type(dofn), {})
    hit = per_class.get(key)
    if hit is None:
        stats["misses"] += 1
        state, timers = original(dofn)
        hit = per_class[key] = (frozenset(state), frozenset(timers))
    else:
        stats["hits"] += 1
    return set(hit[0]), set(hit[1])


def memoised_dofn_specs():
    """While active, Beam's ``get_dofn_specs`` (and ``is_stateful_dofn``/``validate_stateful_dofn``,
    which call it) answers from the per-class cache; restored when the outermost use exits."""
    from apache_beam.transforms import userstate

    return _specs_patch.active(userstate, "get_dofn_specs")


# ---------------------------------------------------------------- PipelineOptions.view_as
# Beam calls ``options.view_as(TypeOptions)`` (and others) about twice per transform while building
# the graph; each call builds an argparse parser and parses the flags again (~2 ms: 2,450 calls,
# ~4 s of the profiled tiny run). A view holds no state of its own: its values live in the
# ``_all_options`` dict it shares with the object it was made from (never replaced after
# construction), ``__setattr__`` admits nothing else, and the flags it parses never change. So the
# same view object answers every later ``view_as`` of the same options object and class.
_views: Dict[int, Tuple[object, Dict[type, object]]] = {}   # id(options) -> (options, {cls: view})


def _memoised_view_as(self, cls):
    entry = _views.get(id(self))
    if entry is None or entry[0] is not self:
        entry = _views[id(self)] = (self, {})
    view = entry[1].get(cls)
    if view is None:
        view = entry[1][cls] = _views_patch.original(self, cls)
    return view


def memoised_option_views():
    """While active, ``PipelineOptions.view_as`` returns one view per (options object, class); the
    views (and the options they hold) are released when the outermost use exits."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return _views_patch.active(PipelineOptions, "view_as")


# ---------------------------------------------------------------- BundleManager._send_input_to_worker
def _send_input_in_chunks(self, process_bundle_id, read_transform_id, byte_streams) -> None:
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.runners.worker import data_plane

    conn = self._worker_handler.data_conn if self._worker_handler is not None else None
    if not isinstance(conn, data_plane.InMemoryDataChannel):   # gRPC workers: Beam's own path
        return _inputs_patch.original(self, process_bundle_id, read_transform_id, byte_streams)
    inputs = conn.inverse()._inputs   # what the worker side reads for this instruction
    stats["input_sends"] += 1
    for chunk in byte_streams or ():
        if chunk:   # the channel skips empty data (as it skips Beam's own empty message)
            stats["input_chunks"] += 1
            inputs.append(beam_fn_api_pb2.Elements.Data(
                instruction_id=process_bundle_id, transform_id=read_transform_id, data=chunk))


def chunked_stage_inputs():
    """While active, an in-memory worker receives a stage's input as the chunks the runner buffered,
    one ``Elements.Data`` each, instead of one concatenated copy (see the module docstring)."""
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    return _inputs_patch.active(fn_runner.BundleManager, "_send_input_to_worker")


_specs_patch = _Patch(_memoised)
_views_patch = _Patch(_memoised_view_as, on_release=_views.clear)
_inputs_patch = _Patch(_send_input_in_chunks)


@contextlib.contextmanager
def installed():
    """Every patch here, for the duration of one pipeline run (construction and execution)."""
    with memoised_dofn_specs(), memoised_option_views(), chunked_stage_inputs():
        yield


def local_runner(options):
    """The runner Beam's ``DirectRunner`` ends up with for a batch pipeline (the ``FnApiRunner``, given
    the same options), without first trying to download and start Prism."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))
