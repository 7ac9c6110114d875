"""Init container of each pipeline Job: wait until the previous step's output exists.

Jobs applied together by `kubectl apply -k` start at once; each one's first container waits for
the file the previous step writes last (paths relative to the run directory of
/etc/recsys/job.yaml, so the Jobs and this check agree on where a run lives). Works for local
volumes and bucket URIs (gs://...: TensorFlow's file systems, in the recsys image).

    python wait_for.py --config /etc/recsys/job.yaml --timeout 21600 preprocessed/LATEST
    python wait_for.py --config /etc/recsys/job.yaml 'training/ranking/{cfg.ranking.model}/meta.json'
"""
import argparse
import os
import sys
import time


def exists_fn(path: str):
    if "://" in path:
        import tensorflow as tf  # the recsys image has it; only bucket paths need it

        return tf.io.gfile.exists
    return os.path.exists


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="the Jobs' recsys config (job.yaml)")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="give up after this many seconds")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between checks")
    p.add_argument("paths", nargs="+", help="paths under the run directory that must all exist; "
                                           "{cfg.section.key} is replaced by that config value")
    a = p.parse_args(argv)
    from recsys.config import load_config

    cfg = load_config(a.config)
    targets = [cfg.path(*rel.format(cfg=cfg).split("/")) for rel in a.paths]
    exists = exists_fn(targets[0])
    deadline = time.time() + a.timeout
    while True:
        missing = [t for t in targets if not exists(t)]
        if not missing:
            print(f"found: {', '.join(targets)}", flush=True)
            return 0
        if time.time() >= deadline:
            print(f"timed out after {a.timeout:.0f}s waiting for {', '.join(missing)}", file=sys.stderr)
            return 1
        print(f"waiting for {', '.join(missing)}", flush=True)
        time.sleep(a.interval)


if __name__ == "__main__":
    sys.exit(main())
