"""The Helm chart renders to valid Kubernetes objects that run the registry as documented.

helm and kubeconform are Go programs built once from the Go module proxy into .cache/bin by
deploy/local/build-helm-tools.sh. kubeconform checks every rendered object strictly (no unknown
field) against the Kubernetes JSON schemas that the kubernetes-validate package ships (a dev
dependency); its schemas name their shared definitions by an https $id, which kubeconform would
try to download, so the test points the references at a local copy first.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kfm-rollback-registry"
TEST_VALUES = CHART / "ci" / "test-values.yaml"
KUBE_VERSION = "1.33.0"

pytestmark = [
    pytest.mark.skipif(shutil.which("go") is None,
                       reason="the Go toolchain (go) is not installed; it builds helm and kubeconform"),
    pytest.mark.timeout(900),  # a cold build of helm takes about 3 minutes on two cores
]


@pytest.fixture(scope="module")
def tools() -> tuple[Path, Path]:
    out = subprocess.run([str(ROOT / "deploy" / "local" / "build-helm-tools.sh")], capture_output=True, text=True,
                         timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-4000:]
    helm, kubeconform = (Path(p) for p in out.stdout.split())
    return helm, kubeconform


def _schemas(dest: Path) -> Path:
    """The strict schemas of KUBE_VERSION with their https references turned into local ones."""
    src = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBE_VERSION}-local-strict"
    out = dest / f"v{KUBE_VERSION}-local-strict"
    out.mkdir(parents=True)
    ref = re.compile(r'"\$ref": "/api/_definitions\.json#')
    for f in src.glob("*.json"):
        doc = json.loads(f.read_text(encoding="utf-8"))
        doc.pop("$id", None)  # the file's own path is then its base
        text = json.dumps(doc)
        target = '"$ref": "#' if f.name == "_definitions.json" else '"$ref": "_definitions.json#'
        (out / f.name).write_text(ref.sub(target, text.replace('"$ref":"', '"$ref": "')), encoding="utf-8")
    return dest


def _kubeconform(kubeconform: Path, schemas: Path, manifest: Path) -> subprocess.CompletedProcess[str]:
    location = "/".join([str(schemas), "{{ .NormalizedKubernetesVersion }}-local-strict",
                         "{{ .ResourceKind }}{{ .KindSuffix }}.json"])
    return subprocess.run([str(kubeconform), "-strict", "-summary", "-kubernetes-version", KUBE_VERSION,
                           "-schema-location", location, str(manifest)],
                          capture_output=True, text=True, timeout=120, check=False)


def _render(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), "template", "kfm", str(CHART), "--kube-version", KUBE_VERSION, *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_helm_lint(tools: tuple[Path, Path]) -> None:
    helm, _ = tools
    out = subprocess.run([str(helm), "lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART),
                          "-f", str(TEST_VALUES)], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


def test_rendered_objects_are_valid_kubernetes(tools: tuple[Path, Path], tmp_path: Path) -> None:
    helm, kubeconform = tools
    rendered = _render(helm, "-f", str(TEST_VALUES))
    assert rendered.returncode == 0, rendered.stderr
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered.stdout, encoding="utf-8")
    out = _kubeconform(kubeconform, _schemas(tmp_path / "schemas"), manifest)
    assert out.returncode == 0, out.stdout + out.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d)
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "Service", "Service", "ServiceAccount", "StatefulSet"]
    assert f"Valid: {len(kinds)}, Invalid: 0, Errors: 0, Skipped: 0" in out.stdout


def test_kubeconform_rejects_what_kubernetes_would(tools: tuple[Path, Path], tmp_path: Path) -> None:
    """The check can fail: an unknown field and a wrong type are reported against the same schemas."""
    _, kubeconform = tools
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  portz: []\n"
                   "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: y}\nspec: {replicas: two}\n")
    out = _kubeconform(kubeconform, _schemas(tmp_path / "schemas"), bad)
    assert out.returncode == 1
    assert "Valid: 0, Invalid: 2" in out.stdout, out.stdout


def _objects(helm: Path, *args: str) -> dict[str, dict[str, Any]]:
    rendered = _render(helm, "-f", str(TEST_VALUES), *args)
    assert rendered.returncode == 0, rendered.stderr
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(rendered.stdout) if d}


def test_the_pods_run_as_documented(tools: tuple[Path, Path]) -> None:
    helm, _ = tools
    objs = _objects(helm)
    receiver = objs["Deployment/kfm-kfm-rollback-registry-receiver"]["spec"]["template"]["spec"]
    worker_set = objs["StatefulSet/kfm-kfm-rollback-registry-worker"]["spec"]
    worker = worker_set["template"]["spec"]
    for pod in (receiver, worker):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        for c in pod["containers"] + pod.get("initContainers", []):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["resources"]["requests"], c["name"]

    (rc,) = receiver["containers"]
    assert rc["args"] == ["hooks", "serve"]
    assert rc["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert rc["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in rc["env"]}
    assert env["KFM_HOOKS_HOST"]["value"] == "0.0.0.0"
    assert env["KFM_HOOK_TOKEN_FILE"]["value"] == "/var/run/secrets/kfm/hook-token"
    # /metrics on a port of its own, which the webhook Service does not expose; the pod annotations point at it.
    ports = {p["name"]: p["containerPort"] for p in rc["ports"]}
    assert ports["metrics"] == int(env["KFM_HOOKS_METRICS_PORT"]["value"]) != ports["http"]
    receiver_pod = objs["Deployment/kfm-kfm-rollback-registry-receiver"]["spec"]["template"]["metadata"]
    assert receiver_pod["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    service = objs["Service/kfm-kfm-rollback-registry-receiver"]["spec"]
    assert [p["targetPort"] for p in service["ports"]] == ["http"]
    assert service["selector"] == objs["Deployment/kfm-kfm-rollback-registry-receiver"]["spec"]["selector"][
        "matchLabels"]

    (wc,) = worker["containers"]
    assert wc["args"] == ["worker"]
    env = {e["name"]: e for e in wc["env"]}
    assert env["KFM_WORKER_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["KFM_SIGNING_KEY"]["value"] == "/var/run/secrets/kfm/signing-key"
    assert env["KFM_S3_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "kfm-secrets", "key": "s3-secret-access-key", "optional": True}
    assert env["KFM_EXTRA_SECRET_FOR_TEST"]["valueFrom"]["secretKeyRef"]["name"] == "kfm-other"
    assert [c["args"] for c in worker["initContainers"]] == [["topics", "ensure"]]
    # The worker's own probes (no `kfm health` process per probe, no signing key needed) and metrics.
    assert wc["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert wc["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in wc["ports"]} == {"http": int(env["KFM_WORKER_HTTP_PORT"]["value"])}
    assert env["KFM_METRICS_HOST"]["value"] == "0.0.0.0"
    pod_annotations = worker_set["template"]["metadata"]["annotations"]
    assert pod_annotations["prometheus.io/port"] == env["KFM_WORKER_HTTP_PORT"]["value"]
    assert pod_annotations["prometheus.io/path"] == "/metrics"
    assert worker_set["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "standard"

    config = objs["ConfigMap/kfm-kfm-rollback-registry"]["data"]
    assert config["KFM_KAFKA_BOOTSTRAP"] == "kafka-0.kafka:9092,kafka-1.kafka:9092"
    assert config["KFM_WORK_DIR"] == "/var/lib/kfm/work"
    assert "KFM_TOPIC_PREFIX" not in config, "an empty setting is left out, so the process default applies"
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
    assert "OTEL_RESOURCE_ATTRIBUTES" not in config
    assert config["OPENLINEAGE_URL"] == "http://marquez.lineage:5000"
    assert not any("secret" in k.lower() or "token" in k.lower() for k in config), "secrets are not config"


def test_missing_required_values_are_refused_with_their_name(tools: tuple[Path, Path]) -> None:
    helm, _ = tools
    out = _render(helm, "-f", str(TEST_VALUES), "--set", "config.KFM_S3_BUCKET=")
    assert out.returncode == 1
    assert "config.KFM_S3_BUCKET is required" in out.stderr
    out = _render(helm, "-f", str(TEST_VALUES), "--set", "secrets.name=")
    assert out.returncode == 1
    assert "secrets.name: name the Secret" in out.stderr
    out = _render(helm, "-f", str(TEST_VALUES), "--set", "config.AWS_REGION=x")
    assert out.returncode == 1
    assert "only KFM_*, OTEL_* and OPENLINEAGE* settings belong here" in out.stderr
