"""Helpers shared by the benchmarks: tables, JSON, timing, memory and machine details.

Nothing here is specific to one benchmark; keep it that way so every
``benchmarks.<name>`` module can reuse it.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from trainer.text_table import Column, format_table  # noqa: F401  (the benchmarks' tables)

try:  # psutil is a declared dependency, but keep the helpers usable without it.
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

# Packages whose versions are worth recording next to any benchmark result.
DEFAULT_PACKAGES = ("numpy", "tensorflow", "tf-keras", "tensorflow-recommenders", "scann", "psutil", "matplotlib")

MiB = 1024.0 * 1024.0
GiB = 1024.0 * MiB


# --------------------------------------------------------------------------- machine details


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags() -> List[str]:
    """The SIMD flags that matter for vector search speed (AVX2/AVX-512/FMA)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "amx")))
    except OSError:
        pass
    return []


def package_versions(packages: Iterable[str] = DEFAULT_PACKAGES) -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_info(packages: Iterable[str] = DEFAULT_PACKAGES) -> Dict[str, Any]:
    """CPU model, core counts, memory, OS, Python and package versions."""
    info: Dict[str, Any] = {
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(packages),
    }
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["usable_cores"] = os.cpu_count()
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if psutil is not None:
        vm = psutil.virtual_memory()
        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_total_gib"] = round(vm.total / GiB, 2)
        info["memory_available_gib"] = round(vm.available / GiB, 2)
    return info


def format_machine(info: Mapping[str, Any]) -> str:
    pk = info.get("packages", {})
    pk_s = ", ".join(f"{k} {v}" for k, v in pk.items() if v)
    lines = [
        f"CPU: {info.get('cpu_model')} ({info.get('usable_cores')} usable / {info.get('logical_cores')} logical cores"
        + (f", {info['physical_cores']} physical" if info.get("physical_cores") else "")
        + ")",
    ]
    if "memory_total_gib" in info:
        lines.append(f"Memory: {info['memory_total_gib']} GiB total, {info['memory_available_gib']} GiB available at start")
    if "load_average" in info:
        lines.append(f"Load average at start: {info['load_average']}")
    lines.append(f"Python {info.get('python')} on {info.get('platform')}")
    lines.append(f"Packages: {pk_s}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- tables


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Any], title: Optional[str] = None, file=None) -> str:
    text = format_table(rows, columns, title)
    print(text, file=file or sys.stdout, flush=True)
    return text


# --------------------------------------------------------------------------- JSON


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays without importing numpy here
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)


def _clean_floats(obj: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_floats(v) for v in obj]
    return obj


def write_json(path: str, obj: Any) -> str:
    """Write ``obj`` as indented JSON (numpy values converted, NaN -> null); returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = _clean_floats(json.loads(json.dumps(obj, default=_json_default)))
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- timing


def time_call(fn: Callable[[], Any], reps: int = 3, warmup: int = 1) -> Dict[str, Any]:
    """Run ``fn`` ``warmup`` times untimed, then ``reps`` times timed (perf_counter).

    Returns ``{"median_s", "min_s", "max_s", "times_s", "result"}`` where ``result`` is
    the last return value.
    """
    result = None
    for _ in range(max(0, warmup)):
        result = fn()
    times = []
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
        "result": result,
    }


def percentiles(values: Sequence[float], ps: Sequence[float] = (50, 90, 99)) -> Dict[str, float]:
    """Nearest-rank percentiles of ``values`` as ``{"p50": ..., ...}``."""
    if not values:
        return {f"p{int(p) if float(p).is_integer() else p}": float("nan") for p in ps}
    s = sorted(values)
    out = {}
    for p in ps:
        idx = min(len(s) - 1, max(0, int(math.ceil(p / 100.0 * len(s))) - 1))
        out[f"p{int(p) if float(p).is_integer() else p}"] = s[idx]
    return out


# --------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    """Resident set size of this process (0 when psutil is missing)."""
    if psutil is None:
        return 0
    return psutil.Process().memory_info().rss


def available_memory_bytes() -> Optional[int]:
    if psutil is None:
        return None
    return psutil.virtual_memory().available


class MemoryDelta:
    """``with MemoryDelta() as m: ...``; then ``m.delta_bytes`` is the RSS growth.

    RSS deltas are approximate: memory freed earlier may be reused by the allocator and
    transient allocations released before the block ends are not counted.
    """

    def __init__(self, collect: bool = True):
        self.collect = collect
        self.before = 0
        self.after = 0

    def __enter__(self) -> "MemoryDelta":
        if self.collect:
            gc.collect()
        self.before = rss_bytes()
        return self

    def __exit__(self, *exc) -> None:
        if self.collect:
            gc.collect()
        self.after = rss_bytes()

    @property
    def delta_bytes(self) -> int:
        return self.after - self.before

    @property
    def delta_mb(self) -> float:
        return self.delta_bytes / MiB


def dir_size_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


# --------------------------------------------------------------------------- threads


def limit_threads(n: Optional[int]) -> Dict[str, Any]:
    """Cap the BLAS/OpenMP thread pools of this process at ``n`` threads.

    Sets the usual environment variables (effective for libraries loaded later) and,
    where threadpoolctl is installed, limits already-loaded pools too. Returns what
    was done, for the benchmark's record.
    """
    done: Dict[str, Any] = {"threads": n}
    if not n:
        return done
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        import threadpoolctl  # type: ignore

        threadpoolctl.threadpool_limits(limits=n)
        done["threadpoolctl"] = [
            {"api": p.get("internal_api"), "num_threads": p.get("num_threads")} for p in threadpoolctl.threadpool_info()
        ]
    except Exception:  # noqa: BLE001 - optional
        done["threadpoolctl"] = None
        done["numpy_openblas"] = _set_numpy_openblas_threads(n)
    return done


def _set_numpy_openblas_threads(n: int) -> Optional[int]:
    """Without threadpoolctl: call the OpenBLAS bundled in NumPy's wheel directly.

    Returns the thread count OpenBLAS reports afterwards, or None when it can't be found.
    """
    if "numpy" not in sys.modules:
        return None  # not loaded yet: the environment variables above will apply
    try:
        import ctypes
        import glob

        import numpy  # noqa: F401

        libdir = os.path.dirname(sys.modules["numpy"].__file__) + ".libs"
        for path in sorted(glob.glob(os.path.join(libdir, "libopenblas*.so*"))):
            lib = ctypes.CDLL(path)
            for suffix in ("64_", ""):
                setter = getattr(lib, "openblas_set_num_threads" + suffix, None)
                getter = getattr(lib, "openblas_get_num_threads" + suffix, None)
                if setter is not None and getter is not None:
                    setter(int(n))
                    return int(getter())
    except Exception:  # noqa: BLE001 - best effort
        return None
    return None


def fmt_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


# --------------------------------------------------------------------------- process-tree memory sampling


class ProcessTreeSampler:
    """Samples the memory of a process *and all its descendants* in a background thread.

    ``with ProcessTreeSampler(pid) as s: ...`` (pid defaults to this process); afterwards
    ``s.result()`` holds the peaks. Per sample it sums RSS over the tree (shared pages,
    e.g. the TensorFlow libraries every worker maps, are counted once per process) and,
    where readable, PSS (shared pages split between the processes that map them: the
    better estimate of the tree's real footprint). Peaks between samples can be missed,
    so keep ``interval`` well below the phase lengths being measured.
    """

    def __init__(self, pid: Optional[int] = None, interval: float = 0.25, pss: bool = True):
        self.pid = pid or os.getpid()
        self.interval = interval
        self.pss = pss and psutil is not None
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_main_rss = 0
        self.max_processes = 0
        self.samples = 0
        self._stop = None
        self._thread = None

    def _sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            return
        rss = pss = 0
        pss_ok = self.pss
        for i, p in enumerate(procs):
            try:
                r = p.memory_info().rss
            except psutil.Error:
                continue
            rss += r
            if i == 0:
                self.peak_main_rss = max(self.peak_main_rss, r)
            if pss_ok:
                try:
                    pss += p.memory_full_info().pss
                except (psutil.Error, AttributeError):
                    pss_ok = False
        self.peak_rss = max(self.peak_rss, rss)
        if pss_ok:
            self.peak_pss = max(self.peak_pss, pss)
        else:
            self.pss = False
        self.max_processes = max(self.max_processes, len(procs))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def start(self) -> "ProcessTreeSampler":
        import threading

        if psutil is None:
            return self
        self._stop = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Dict[str, Any]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        return self.result()

    def __enter__(self) -> "ProcessTreeSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def result(self) -> Dict[str, Any]:
        return {
            "peak_rss_tree_mb": round(self.peak_rss / MiB, 1) if self.samples else None,
            "peak_pss_tree_mb": round(self.peak_pss / MiB, 1) if self.samples and self.pss else None,
            "peak_rss_main_mb": round(self.peak_main_rss / MiB, 1) if self.samples else None,
            "max_processes": self.max_processes,
            "samples": self.samples,
            "interval_s": self.interval,
        }


# --------------------------------------------------------------------------- power-law fits


def fit_power_law(xs: Sequence[float], ys: Sequence[float]) -> Optional[Dict[str, Any]]:
    """Least-squares fit of log y = log a + b log x over the positive points.

    Returns ``{"a", "b", "n", "r2"}`` (r2 is None for two points, where the line is exact),
    or None with fewer than two usable points or a single distinct x.
    """
    pts = [(float(x), float(y)) for x, y in zip(xs, ys)
           if x is not None and y is not None and float(x) > 0 and float(y) > 0]
    if len(pts) < 2 or len({x for x, _ in pts}) < 2:
        return None
    lx = [math.log(x) for x, _ in pts]
    ly = [math.log(y) for _, y in pts]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((v - mx) ** 2 for v in lx)
    b = sum((u - mx) * (v - my) for u, v in zip(lx, ly)) / sxx
    la = my - b * mx
    r2 = None
    if len(pts) > 2:
        ss_tot = sum((v - my) ** 2 for v in ly)
        ss_res = sum((v - (la + b * u)) ** 2 for u, v in zip(lx, ly))
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return {"a": math.exp(la), "b": b, "n": len(pts), "r2": r2}


def power_law_at(fit: Mapping[str, Any], x: float) -> float:
    return float(fit["a"]) * float(x) ** float(fit["b"])


def fit_linear(xs: Sequence[float], ys: Sequence[float]) -> Optional[Dict[str, Any]]:
    """Least-squares fit of y = fixed + per_unit * x (for costs that add a fixed part and a per-unit part).

    Returns ``{"fixed", "per_unit", "n"}``, or None with fewer than two distinct x or a
    non-positive per-unit cost (no measurable growth).
    """
    pts = [(float(x), float(y)) for x, y in zip(xs, ys) if x is not None and y is not None]
    if len(pts) < 2 or len({x for x, _ in pts}) < 2:
        return None
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    c = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    if c <= 0:
        return None
    return {"fixed": my - c * mx, "per_unit": c, "n": n}
