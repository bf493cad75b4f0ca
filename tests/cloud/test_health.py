"""The health probe against a real worker process, as a Kubernetes exec probe runs it."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jetsplit.cloud.config import load_cloud_config
from jetsplit.cloud.health import HEALTHY, UNHEALTHY, USAGE, _parser, main
from tests.support.daemons import curve_keys, start_worker


def test_probe_of_a_live_worker(make_bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle("split")
    worker, endpoint = start_worker(str(bundle.root), bind="tcp://127.0.0.1:0")
    try:
        assert main([endpoint, "--fingerprint", bundle.fingerprint, "--timeout-ms", "3000"]) == HEALTHY
        assert capsys.readouterr().out.startswith(f"healthy {endpoint}")
        assert main([endpoint]) == HEALTHY  # no fingerprint: any answer will do
        other = "0" * 64
        assert main([endpoint, "--fingerprint", other, "--timeout-ms", "3000"]) == UNHEALTHY
        assert f"bundle {other} not served" in capsys.readouterr().out
        # The exec-probe form: a separate interpreter, `python -m`, the exit status.
        done = subprocess.run([sys.executable, "-m", "jetsplit.cloud.health", endpoint,
                               "--fingerprint", bundle.fingerprint, "--timeout-ms", "5000"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == HEALTHY, done.stdout + done.stderr
    finally:
        assert worker.stop() == 0
    # Stopped: nothing answers any more.
    assert main([endpoint, "--timeout-ms", "300"]) == UNHEALTHY
    assert capsys.readouterr().out.startswith(f"unhealthy {endpoint}")


def test_probe_of_a_curve_worker_needs_an_allowed_key(make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle("split")
    keys, allowed = curve_keys(tmp_path, "probe")
    worker, endpoint = start_worker(
        str(bundle.root), bind="tcp://127.0.0.1:0",
        extra=("--curve-secret", str(keys / "worker.key_secret"), "--curve-allow", str(allowed)),
    )
    server_key = str(keys / "worker.key")
    try:
        assert main([endpoint, "--fingerprint", bundle.fingerprint, "--timeout-ms", "3000",
                     "--curve-secret", str(keys / "probe.key_secret"), "--curve-server-key", server_key]) == HEALTHY
        assert main([endpoint, "--timeout-ms", "500",
                     "--curve-secret", str(keys / "stranger.key_secret"), "--curve-server-key", server_key]) == UNHEALTHY
        assert main([endpoint, "--timeout-ms", "500"]) == UNHEALTHY  # plain text to a CURVE worker
    finally:
        assert worker.stop() == 0


def test_nothing_listening_is_unhealthy(tmp_path: Path) -> None:
    assert main([f"ipc://{tmp_path}/nobody.sock", "--timeout-ms", "200"]) == UNHEALTHY


@pytest.mark.parametrize("argv", [
    [],
    ["127.0.0.1:5555"],
    ["tcp://127.0.0.1:5555", "--timeout-ms", "0"],
    ["tcp://127.0.0.1:5555", "--curve-secret", "probe.key_secret"],
])
def test_usage_errors(argv: list[str]) -> None:
    assert main(argv) == USAGE


# --------------------------------------------------------- the Kubernetes manifest
# Its probes run this module; it is validated offline against the Kubernetes API
# schemas that the PyPI package kubernetes-validate bundles (no cluster, no network).

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "jetsplit-cloud.yaml"
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")  # the oldest and newest this file must suit


def _manifest() -> dict[str, dict[str, Any]]:
    yaml = pytest.importorskip("yaml", reason="PyYAML (a dependency of kubernetes-validate) is not installed")
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {d["kind"]: d for d in docs}


def _validator() -> Any:
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install kubernetes-validate: it bundles the schemas)")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    kv = _validator()
    docs = _manifest()
    assert set(docs) == {"Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
    for doc in docs.values():
        kv.validate(doc, version, strict=True)  # raises on any error; strict: no unknown fields


def test_validator_rejects_a_broken_manifest() -> None:
    kv = _validator()
    deployment = copy.deepcopy(_manifest()["Deployment"])
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    deployment = copy.deepcopy(_manifest()["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_manifest_parts_agree(tmp_path: Path) -> None:
    docs = _manifest()
    deployment, service, pdb = docs["Deployment"], docs["Service"], docs["PodDisruptionBudget"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert service["spec"]["clusterIP"] == "None"  # headless: the name resolves to every pod
    for selector in (service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"],
                     deployment["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    container = pod["spec"]["containers"][0]
    assert {"requests", "limits"} <= set(container["resources"])
    # The ConfigMap's cloud.toml is a valid config, and what it names is mounted.
    toml = tmp_path / "cloud.toml"
    toml.write_text(docs["ConfigMap"]["data"]["cloud.toml"])
    config = load_cloud_config(toml, {}, {})
    port = int(config.bind[0].rsplit(":", 1)[1])
    assert container["ports"][0]["containerPort"] == port
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert config.curve_secret is not None and config.curve_allow is not None
    assert Path(config.curve_secret).parent == Path(mounts["worker-keys"])
    assert config.curve_allow == mounts["client-keys"]
    assert "secretName" in volumes["worker-keys"]["secret"] and "secretName" in volumes["client-keys"]["secret"]
    assert volumes["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > config.drain_timeout_s
    # Every probe runs this module against the worker's own port, with a valid command line.
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[kind]["exec"]["command"]
        assert command[:3] == ["python", "-m", "jetsplit.cloud.health"], kind
        args = _parser().parse_args(command[3:])
        assert args.endpoint == f"tcp://127.0.0.1:{port}"
        assert Path(args.curve_secret).parent == Path(mounts["worker-keys"])
        assert Path(args.curve_server_key).parent == Path(mounts["worker-keys"])
        assert args.timeout_ms / 1000 < container[kind]["timeoutSeconds"]
