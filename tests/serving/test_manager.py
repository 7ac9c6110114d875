"""ModelManager without transports: config parsing, warmup failures, reload, readiness, reference counting."""
import numpy as np
import pytest
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from contracts.warmup import write_warmup_requests
from serving.errors import ServingError
from serving.metrics import Metrics
from serving.models import ModelManager, parse_model_config, single_model_config

from .conftest import install_version, query


def test_config_parsing_rejects_what_we_cannot_serve():
    with pytest.raises(ValueError):
        parse_model_config('model_config_list { config { name: "a" base_path: "/x" model_platform: "onnx" } }')
    with pytest.raises(ValueError):
        parse_model_config('model_config_list { config { name: "a" base_path: "/x" } config { name: "a" base_path: "/y" } }')
    cfg = parse_model_config('model_config_list { config { name: "a" base_path: "/x" '
                             'model_version_policy { all {} } } }')
    assert cfg.model_config_list.config[0].model_version_policy.WhichOneof("policy_choice") == "all"


def test_failing_warmup_fails_the_load(model_src, tmp_path):
    base = str(tmp_path / "toy")
    install_version(model_src, base, 1)
    path = install_version(model_src, base, 2)
    write_warmup_requests(path, "toy", [{"user_id": np.array(["w"])}])  # misses 'timestamp'
    metrics = Metrics()
    manager = ModelManager(single_model_config("toy", base), poll_seconds=0, metrics=metrics).start()
    st = {s.version: s for s in manager.status("toy")}
    assert st[2].state == "END" and "warmup record 0" in st[2].error_message
    assert st[1].state == "AVAILABLE"  # latest-1 policy falls back to the newest version that loads
    assert metrics.value("model_warmup_requests_total", {"model_name": "toy", "model_version": "1"}) == 1
    with manager.acquire("toy") as s:
        assert s.version == 1


def test_no_versions_yet_and_readiness(tmp_path, model_src):
    base = str(tmp_path / "toy")
    manager = ModelManager(single_model_config("toy", base), poll_seconds=0).start()
    assert manager.ready() == (False, {"toy": []})
    with pytest.raises(ServingError) as e:
        manager.status("toy")
    assert e.value.code.name == "NOT_FOUND"
    install_version(model_src, base, 1)
    manager.poll()
    assert manager.ready() == (True, {"toy": [1]})


def test_retired_version_waits_for_in_flight_requests(model_src, tmp_path):
    base = str(tmp_path / "toy")
    install_version(model_src, base, 1)
    manager = ModelManager(single_model_config("toy", base), poll_seconds=0, warmup=False).start()
    with manager.acquire("toy") as old:
        install_version(model_src, base, 2)
        manager.poll()  # version 2 in, version 1 retired while we still hold it
        assert [s.state for s in manager.status("toy")] == ["AVAILABLE", "UNLOADING"]
        assert old.predict(query())["scores"][0, 0] == pytest.approx(1.0)  # still usable
    assert [s.state for s in manager.status("toy")] == ["AVAILABLE", "END"]


def test_reload_config_over_grpc(server, model_src, tmp_path):
    import grpc

    from serving.client import ServingClient

    base = str(tmp_path / "extra")
    install_version(model_src, base, 2)
    toy_base = server.manager.config.model_config_list.config[0].base_path
    config = parse_model_config(f'model_config_list {{ config {{ name: "toy" base_path: "{toy_base}" '
                                f'model_platform: "tensorflow" }} '
                                f'config {{ name: "extra" base_path: "{base}" model_platform: "tensorflow" }} }}')
    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(server.grpc_address))
    stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), timeout=30)
    client = ServingClient(server.grpc_address)
    assert client.predict("extra", query()).model_version == 2
    original = parse_model_config(f'model_config_list {{ config {{ name: "toy" base_path: "{toy_base}" '
                                  f'model_platform: "tensorflow" }} }}')
    stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=original), timeout=30)
    with pytest.raises(ServingError):
        client.predict("extra", query())
    assert client.predict("toy", query()).model_version == 1
