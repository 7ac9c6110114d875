"""Runs a pipeline's components in this process, in DAG order, as a KFP launcher would.

Each task calls its component's own Python function (what KFP runs in the task's container) with KFP
artifact objects whose URIs the caller chooses, and importers yield artifacts at a parameter's URI.
No subprocess and no KFP backend: this is how `recsys retrain` runs the retrain pipeline (its URIs are
the run layout's paths) and how the tests run the main one. A task table row is
``(task, component, {input: (producer task, output)}, {output: KFP artifact class})``; the tests check
every table against the compiled DAG (tests/pipelines/test_pipeline.py).
"""
from typing import Callable, Dict, Iterable, Mapping, Sequence, Tuple

IMPORTER = "importer"
# what an importer task yields: KFP names its single output "artifact"
IMPORTER_OUTPUT = "artifact"

TaskRow = Tuple[str, str, Dict[str, Tuple[str, str]], Dict[str, str]]


def run(tasks: Sequence[TaskRow], params: Mapping, uri: Callable[[str, str], str],
        imports: Mapping[str, str] = None, skip: Iterable[str] = ()) -> Dict[str, Dict]:
    """Runs ``tasks`` in order; returns ``{task: {output: KFP artifact or output parameter}}`` (``bless``'s
    ``blessed``, ``tune``'s ``config``); an input names either.

    ``params``: the pipeline parameters; a component receives those its function names (the pipelines wire
    each component parameter to the pipeline parameter of the same name) unless an input gives it.
    ``uri(task, output)``: where an output artifact goes. ``imports``: importer task -> the parameter holding
    its URI. ``skip``: tasks not run.
    """
    from kfp import dsl

    from pipelines import components

    imports, skip, outputs = dict(imports or {}), set(skip), {}
    for task, comp, inputs, outs in tasks:
        if task in skip:
            continue
        if comp == IMPORTER:
            (kind,) = outs.values()
            outputs[task] = {IMPORTER_OUTPUT: getattr(dsl, kind)(name=IMPORTER_OUTPUT, uri=params[imports[task]],
                                                                 metadata={})}
            continue
        fn = getattr(components, comp).python_func
        kwargs = {name: outputs[src][key] for name, (src, key) in inputs.items()}
        made = {name: getattr(dsl, kind)(name=name, uri=uri(task, name), metadata={}) for name, kind in outs.items()}
        wanted = fn.__code__.co_varnames[:fn.__code__.co_argcount]
        result = fn(**{k: v for k, v in params.items() if k in wanted and k not in kwargs}, **kwargs, **made)
        outputs[task] = dict(made, **(result._asdict() if hasattr(result, "_asdict") else {}))  # output parameters
    return outputs
