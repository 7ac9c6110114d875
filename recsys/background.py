"""A second interpreter that runs stages beside the main one.

Most of the demo is single-threaded Python (Beam's runner, TensorFlow's tracing), so on two cores
one sits idle while the other works through a chain of stages. Some stages need nothing from the
work running beside them: the retrieval models can be exported while the ranker trains, then the
ranking model and an explanation while the recommend model is exported, blessed and pushed.
``Worker`` starts ``python -m recsys.background`` early; it imports TensorFlow while the parent
preprocesses, then runs stages by name, one after another. Only a config and artifact URIs go in and
only URIs (or an explanation) come out, as between a pipeline's components. A stage's progress lines
are printed by the parent when it asks for the result.

Protocol (one JSON object per line): ``{"task": NAME, "config": {...}, "args": {...}}`` on stdin;
``{"ok": true, "result": ..., "log": "..."}`` or ``{"ok": false, "error": "..."}`` on stdout. The
worker exits when stdin closes.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
from typing import Any, Callable, Dict, List, Optional

from recsys.child import JsonLinesChild

_restored: Dict[str, Any] = {}  # retrieval URI -> the model restored from it: one restore per worker


def _export_models(cfg, retrieval: str, out: str, names: List[str], ranker: Optional[str] = None) -> Dict[str, str]:
    from recsys import artifacts as af, stages

    model = af.RetrievalModel.read(retrieval)
    return stages.export_models(model, af.Ranker.read(ranker) if ranker else None, cfg, out, names,
                                trained=_restore(model, cfg))


def _restore(model, cfg):
    from recsys import stages

    if model.uri not in _restored:
        _restored[model.uri] = stages.restore_retrieval(model, cfg)
    return _restored[model.uri]


def _explain(cfg, retrieval: str, ranker: str, out_dir: str, user_id: Optional[str] = None) -> Dict[str, Any]:
    from recsys import artifacts as af, stages
    from trainer import explain

    model = af.RetrievalModel.read(retrieval)
    trained = _restore(model, cfg)
    rk = stages.load_ranker(af.Ranker.read(ranker), trained, cfg)
    request = stages.sample_request(stages.preprocessed_of(model), user_id)
    return explain.explain_request(cfg, trained, stages.item_vectors(trained), rk, request, None, out_dir)


TASKS: Dict[str, Callable[..., Any]] = {"export_models": _export_models, "explain": _explain}


class Worker:
    """The parent's handle: ``submit`` tasks (run one after another, in order), ``result()`` for the oldest
    pending one; ``close()`` ends the process."""

    def __init__(self):
        self._child = JsonLinesChild("recsys.background")
        self._pending: List[str] = []

    def submit(self, task: str, cfg, **args) -> "Worker":
        self._child.send({"task": task, "config": cfg.to_dict(), "args": args})
        self._pending.append(task)
        return self

    def result(self) -> Any:
        """The oldest pending task's result (its progress lines printed first); one clear error if it failed."""
        if not self._pending:
            raise RuntimeError("no background task is pending")
        task = self._pending.pop(0)
        reply = self._child.read()
        if reply is None:
            raise RuntimeError(f"the background worker exited during {task!r}, {self._child.failure()}")
        if reply.get("log"):
            print(reply["log"], end="" if reply["log"].endswith("\n") else "\n", flush=True)
        if not reply["ok"]:
            raise RuntimeError(f"background {task} failed: {reply['error']}")
        return reply["result"]

    def close(self) -> None:
        """Ends the worker (at once if a task is still pending: its output is discarded)."""
        self._child.close(kill=bool(self._pending))

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _run(request: Dict[str, Any]) -> Dict[str, Any]:
    from recsys.config import from_dict

    task = TASKS.get(request.get("task"))
    if task is None:
        return {"ok": False, "error": f"unknown task {request.get('task')!r}; known: {', '.join(sorted(TASKS))}"}
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):  # the stage's progress lines, for the parent to print
            result = task(from_dict(request["config"]), **request.get("args", {}))
        return {"ok": True, "result": result, "log": printed.getvalue()}
    except Exception as e:  # noqa: BLE001  (reported to the parent, which raises it)
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "log": printed.getvalue(),
                "traceback": traceback.format_exc()}


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # (stderr goes to a file the parent reads on failure)
    import recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
    import tensorflow  # noqa: F401  (now, while the parent works)

    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything else written to stdout, C++ included, goes to the parent's log file
    for line in sys.stdin:
        if line.strip():
            replies.write(json.dumps(_run(json.loads(line))) + "\n")
            replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
