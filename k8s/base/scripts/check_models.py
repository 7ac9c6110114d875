"""Readiness check for a TF Serving pod: every model named on the command line has an AVAILABLE version.

Run by the `model-probe` sidecar's exec readinessProbe (k8s/base/serving-*.yaml) against the
server's REST API on localhost. TF Serving answers GET /v1/models/<name> with the state of each
loaded version; an httpGet probe can only test one model and only gets a status code, so this
reads the body. Standard library only; exits 0 when all are available, else 1 with one line
naming what is missing.

    python check_models.py --url http://127.0.0.1:8501 retrieval ranking recommend
"""
import argparse
import json
import sys
import urllib.error
import urllib.request


def model_state(url: str, name: str, timeout: float) -> str:
    """'AVAILABLE' or a short reason (HTTP status, server error, states seen)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/v1/models/{name}", timeout=timeout) as r:
            body = json.loads(r.read().decode() or "{}")
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"
    except (OSError, ValueError) as e:  # connection refused, timeout, bad JSON
        return type(e).__name__
    states = [v.get("state", "?") for v in body.get("model_version_status", [])]
    return "AVAILABLE" if "AVAILABLE" in states else "states " + ",".join(states or ["none"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8501", help="TF Serving REST address")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per request")
    p.add_argument("models", nargs="+", help="model names (as in models.config)")
    a = p.parse_args(argv)
    bad = {m: s for m in a.models if (s := model_state(a.url, m, a.timeout)) != "AVAILABLE"}
    if bad:
        print("not ready: " + "; ".join(f"{m}: {s}" for m, s in bad.items()), file=sys.stderr)
        return 1
    print(f"ready: {', '.join(a.models)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
