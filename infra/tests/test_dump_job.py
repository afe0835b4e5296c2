"""The dump job's deployments: the Cloud Run job + Cloud Scheduler trigger
(infra/gcp/dump_job.tf) and the Kubernetes CronJob (infra/k8s). The real
files satisfy every check here; each check fails on a broken fixture
(fixtures_dump_job/) and on a broken copy of the real file.

The schema of the manifest is checked by kubernetes-validate (infra/check);
these are the properties a schema cannot see: who the job runs as, where
its secrets come from, that it cannot run twice at once, that its limits fit
the measured memory (README Benchmarks: the dump peaks at 54 MiB)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

import invariants as inv
from tfconfig import Config, blocks, first, load_dir

INFRA = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures_dump_job"
MANIFEST = INFRA / "k8s" / "dump-cronjob.yaml"

Violations = list[str]

# Twice the dump's measured peak RSS (54 MiB) is the least a limit may be.
MIN_MEMORY_MIB = 108

_UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}


def mebibytes(quantity) -> float | None:
    """A Kubernetes/Cloud Run memory quantity in MiB, None if unreadable."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?", str(quantity))
    if not m:
        return None
    return float(m.group(1)) * (_UNITS[m.group(2)] if m.group(2) else 1 / 2**20)


def _literal(cfg: Config, value):
    """A `${var.X}` value as X's default; other values as they are."""
    m = re.fullmatch(r"\$\{var\.([A-Za-z0-9_]+)\}", str(value))
    if m and m.group(1) in cfg.variables:
        return cfg.variables[m.group(1)].get("default")
    return value


def _task_templates(cfg: Config):
    """(job name, task template) of every Cloud Run job."""
    for name, body in cfg.of_type("google_cloud_run_v2_job"):
        for execution in blocks(body, "template"):
            for task in blocks(execution, "template"):
                yield name, task
        if not any(blocks(e, "template") for e in blocks(body, "template")):
            yield name, {}


def _env(container: dict) -> dict[str, dict]:
    return {e.get("name"): e for e in blocks(container, "env")}


# --------------------------------------------------------------------------
# Terraform: the Cloud Run job and its schedule
# --------------------------------------------------------------------------


def cloud_run_jobs_run_as_dump(cfg: Config) -> Violations:
    """Every Cloud Run job runs as the dump service account (create objects,
    unwrap the signing key), never as the project's default compute account
    (Editor on the whole project)."""
    out = []
    for name, task in _task_templates(cfg):
        account = str(task.get("service_account", ""))
        if not re.fullmatch(r"\$\{google_service_account\.dump\.email\}", account):
            out.append(f"google_cloud_run_v2_job.{name}: runs as {account or 'the default compute service account'}, "
                       "not google_service_account.dump")
    return out


def cloud_run_jobs_have_limits(cfg: Config) -> Violations:
    """Every container of a Cloud Run job has CPU and memory limits, the
    memory at least twice the dump's measured peak."""
    out = []
    for name, task in _task_templates(cfg):
        for i, container in enumerate(blocks(task, "containers")):
            where = f"google_cloud_run_v2_job.{name} container #{i + 1}"
            limits = (first(container, "resources") or {}).get("limits") or {}
            for key in ("cpu", "memory"):
                if not limits.get(key):
                    out.append(f"{where}: no {key} limit")
            value = _literal(cfg, limits.get("memory"))
            memory = mebibytes(value) if value else None
            if value and (memory is None or memory < MIN_MEMORY_MIB):
                out.append(f"{where}: memory limit {value!r} is below {MIN_MEMORY_MIB} MiB "
                           "(twice the dump's measured peak)")
    return out


def cloud_run_jobs_keep_secrets_out_of_config(cfg: Config) -> Violations:
    """The database URL comes from Secret Manager, the signing key is the
    KMS-wrapped file (gcpkms:), no value holds a secret key or a password,
    and no secret version is managed here (its payload would be in the
    Terraform state)."""
    out = [f"google_secret_manager_secret_version.{n}: the secret's payload would be in the Terraform state"
           for n, _ in cfg.of_type("google_secret_manager_secret_version")]
    for name, task in _task_templates(cfg):
        for i, container in enumerate(blocks(task, "containers")):
            where = f"google_cloud_run_v2_job.{name} container #{i + 1}"
            env = _env(container)
            url = env.get("BACKSTOP_DATABASE_URL")
            if url is None or "value" in url or not first(first(url, "value_source") or {}, "secret_key_ref"):
                out.append(f"{where}: BACKSTOP_DATABASE_URL must come from value_source.secret_key_ref")
            signing = str((env.get("BACKSTOP_SIGNING_KEY") or {}).get("value", ""))
            if not signing.startswith("gcpkms:"):
                out.append(f"{where}: BACKSTOP_SIGNING_KEY {signing!r} is not a KMS-wrapped key (gcpkms:)")
            for var, e in env.items():
                value = str(_literal(cfg, e.get("value", "")))
                if "PRIVATE KEY" in value or re.search(r"://[^/@\s]*:[^/@\s]*@", value):
                    out.append(f"{where}: {var} holds a secret in plain text")
    return out


def cloud_run_jobs_are_scheduled(cfg: Config) -> Violations:
    """Every Cloud Run job has a Cloud Scheduler job that POSTs to its
    Admin API :run endpoint."""
    out = []
    for name, _ in cfg.of_type("google_cloud_run_v2_job"):
        ref = re.compile(rf"^https://run\.googleapis\.com/v2/\$\{{google_cloud_run_v2_job\.{name}(\[0\])?\.id\}}:run$")
        if not any(ref.match(str((first(s, "http_target") or {}).get("uri", "")))
                   and (first(s, "http_target") or {}).get("http_method") == "POST"
                   for _, s in cfg.of_type("google_cloud_scheduler_job")):
            out.append(f"google_cloud_run_v2_job.{name}: no Cloud Scheduler job POSTs to its :run endpoint")
    return out


TF_CHECKS = {f.__name__: f for f in (cloud_run_jobs_run_as_dump, cloud_run_jobs_have_limits,
                                     cloud_run_jobs_keep_secrets_out_of_config, cloud_run_jobs_are_scheduled)}


# --------------------------------------------------------------------------
# Kubernetes: the CronJob
# --------------------------------------------------------------------------


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _cronjobs(docs: list[dict]):
    for d in docs:
        if d.get("kind") == "CronJob":
            name = d.get("metadata", {}).get("name")
            job = d.get("spec", {}).get("jobTemplate", {}).get("spec", {})
            yield f"CronJob/{name}", d.get("spec", {}), job, job.get("template", {}).get("spec", {})


def cronjob_runs_once_at_a_time(docs: list[dict]) -> Violations:
    """concurrencyPolicy Forbid, a startingDeadlineSeconds, a backoffLimit
    and an activeDeadlineSeconds (a stuck dump ends)."""
    out = []
    for where, spec, job, _ in _cronjobs(docs):
        if spec.get("concurrencyPolicy") != "Forbid":
            out.append(f"{where}: concurrencyPolicy is {spec.get('concurrencyPolicy')!r}, not Forbid")
        for key, value in (("startingDeadlineSeconds", spec.get("startingDeadlineSeconds")),
                           ("backoffLimit", job.get("backoffLimit")),
                           ("activeDeadlineSeconds", job.get("activeDeadlineSeconds"))):
            if not isinstance(value, int) or value < (0 if key == "backoffLimit" else 1):
                out.append(f"{where}: no {key}")
    return out


def cronjob_is_non_root_and_read_only(docs: list[dict]) -> Violations:
    """Non-root, read-only root filesystem with an emptyDir for /tmp, no
    privilege escalation, no capabilities."""
    out = []
    for where, _, _, pod in _cronjobs(docs):
        ctx = pod.get("securityContext", {})
        if ctx.get("runAsNonRoot") is not True or ctx.get("runAsUser") in (None, 0):
            out.append(f"{where}: the pod does not run as a non-root user (runAsNonRoot, runAsUser)")
        empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for c in pod.get("containers", []):
            cctx = c.get("securityContext", {})
            if cctx.get("readOnlyRootFilesystem") is not True:
                out.append(f"{where} container {c.get('name')}: root filesystem is not read-only")
            if cctx.get("allowPrivilegeEscalation") is not False:
                out.append(f"{where} container {c.get('name')}: privilege escalation is allowed")
            if "ALL" not in cctx.get("capabilities", {}).get("drop", []):
                out.append(f"{where} container {c.get('name')}: capabilities are not all dropped")
            if not any(m.get("mountPath") == "/tmp" and m.get("name") in empty_dirs for m in c.get("volumeMounts", [])):
                out.append(f"{where} container {c.get('name')}: no emptyDir at /tmp")
    return out


def cronjob_resources_fit_the_dump(docs: list[dict]) -> Violations:
    """Requests and limits of CPU and memory; the memory limit at least
    twice the measured peak and no request above its limit."""
    out = []
    for where, _, _, pod in _cronjobs(docs):
        for c in pod.get("containers", []):
            res = c.get("resources", {})
            here = f"{where} container {c.get('name')}"
            for kind in ("requests", "limits"):
                for key in ("cpu", "memory"):
                    if key not in res.get(kind, {}):
                        out.append(f"{here}: no {key} in {kind}")
            limit = mebibytes(res.get("limits", {}).get("memory", ""))
            request = mebibytes(res.get("requests", {}).get("memory", ""))
            if limit is not None and limit < MIN_MEMORY_MIB:
                out.append(f"{here}: memory limit {limit:.0f} MiB is below {MIN_MEMORY_MIB} MiB")
            if limit is not None and request is not None and request > limit:
                out.append(f"{here}: memory request above its limit")
    return out


def cronjob_keys_and_identity(docs: list[dict]) -> Violations:
    """Workload Identity (the pod's service account carries the GCP service
    account annotation), the database URL from a Secret, the signing key
    KMS-wrapped (gcpkms:) in a read-only Secret mount."""
    out = []
    annotated = {d["metadata"]["name"] for d in docs if d.get("kind") == "ServiceAccount"
                 and d.get("metadata", {}).get("annotations", {}).get("iam.gke.io/gcp-service-account")}
    for where, _, _, pod in _cronjobs(docs):
        if pod.get("serviceAccountName") not in annotated:
            out.append(f"{where}: service account {pod.get('serviceAccountName')!r} has no "
                       "iam.gke.io/gcp-service-account annotation (Workload Identity)")
        secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
        for c in pod.get("containers", []):
            here = f"{where} container {c.get('name')}"
            env = {e.get("name"): e for e in c.get("env", [])}
            url = env.get("BACKSTOP_DATABASE_URL", {})
            if "secretKeyRef" not in url.get("valueFrom", {}):
                out.append(f"{here}: BACKSTOP_DATABASE_URL must come from a secretKeyRef")
            signing = str(env.get("BACKSTOP_SIGNING_KEY", {}).get("value", ""))
            mounts = {m.get("mountPath"): m for m in c.get("volumeMounts", []) if m.get("name") in secret_volumes}
            path = signing.rsplit(":", 1)[-1]
            if not signing.startswith("gcpkms:"):
                out.append(f"{here}: BACKSTOP_SIGNING_KEY {signing!r} is not a KMS-wrapped key (gcpkms:)")
            elif not any(path.startswith(p.rstrip("/") + "/") for p in mounts):
                out.append(f"{here}: the wrapped signing key {path} is not in a Secret mount")
            for p, m in mounts.items():
                if m.get("readOnly") is not True:
                    out.append(f"{here}: Secret mount {p} is not read-only")
    return out


K8S_CHECKS = {f.__name__: f for f in (cronjob_runs_once_at_a_time, cronjob_is_non_root_and_read_only,
                                      cronjob_resources_fit_the_dump, cronjob_keys_and_identity)}


# --------------------------------------------------------------------------
# the real files pass
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gcp():
    return load_dir(INFRA / "gcp")


@pytest.mark.parametrize("check", sorted(TF_CHECKS))
def test_real_dump_job_satisfies(gcp, check):
    assert TF_CHECKS[check](gcp) == []


@pytest.mark.parametrize("check", sorted(K8S_CHECKS))
def test_real_cronjob_satisfies(check):
    assert K8S_CHECKS[check](_docs(MANIFEST)) == []


def test_real_files_are_not_vacuous(gcp):
    for key in [("google_cloud_run_v2_job", "dump"), ("google_cloud_scheduler_job", "dump"),
                ("google_cloud_run_v2_job_iam_member", "scheduler_runs_dump"),
                ("google_secret_manager_secret", "dump_database_url"),
                ("google_secret_manager_secret", "dump_signing_key")]:
        assert key in gcp.resources, f"{key} missing from infra/gcp"
    assert len(list(_task_templates(gcp))) == 1
    assert [w for w, *_ in _cronjobs(_docs(MANIFEST))] == ["CronJob/backstop-dump"]


# --------------------------------------------------------------------------
# each check fails on a broken fixture ...
# --------------------------------------------------------------------------

BROKEN_TF = [
    # (fixture dir, check, expected fragments)
    ("job_runs_as_default", "cloud_run_jobs_run_as_dump", ["the default compute service account",
                                                           "runs as ${google_service_account.restore.email}"]),
    ("job_without_limits", "cloud_run_jobs_have_limits", ["no cpu limit", "memory limit '64Mi' is below"]),
    ("job_secrets_in_config", "cloud_run_jobs_keep_secrets_out_of_config",
     ["google_secret_manager_secret_version.url", "BACKSTOP_DATABASE_URL must come from value_source",
      "'file:/keys/signing.sec.asc' is not a KMS-wrapped key", "BACKSTOP_DATABASE_URL holds a secret",
      "BACKSTOP_SIGNING_KEY_TEXT holds a secret"]),
    ("job_unscheduled", "cloud_run_jobs_are_scheduled", ["google_cloud_run_v2_job.dump: no Cloud Scheduler job"]),
    # The shared invariants, where the dump job widened them:
    ("scheduler_run_api_with_oidc", "scheduler_jobs_use_oidc",
     ["dump: calls a Google API without an oauth_token", "dump: a Google API takes no oidc_token",
      "no_account: calls a Google API without an oauth_token"]),
    ("grants_beyond_dump_job", "gcp_grants_within_table",
     ["scheduler_invoker may hold nothing on google_cloud_run_v2_job.other",
      "dump may hold nothing on google_secret_manager_secret.other",
      "restore may hold nothing on google_secret_manager_secret.dump_database_url",
      "dump gets roles/run.developer, whose permissions are unknown"]),
]


@pytest.mark.parametrize("fixture,check,expected", BROKEN_TF, ids=[f[0] for f in BROKEN_TF])
def test_tf_check_fails_on_broken_fixture(fixture, check, expected):
    check_fn = TF_CHECKS.get(check) or inv.CHECKS[check]
    text = "\n".join(check_fn(load_dir(FIXTURES / fixture)))
    assert text, f"{check} accepted the broken fixture {fixture}"
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not reported; got:\n{text}"


BROKEN_K8S = [
    ("cronjob_runs_once_at_a_time", ["concurrencyPolicy is 'Allow', not Forbid", "no startingDeadlineSeconds",
                                     "no backoffLimit"]),
    ("cronjob_is_non_root_and_read_only", ["does not run as a non-root user", "root filesystem is not read-only",
                                           "privilege escalation is allowed", "capabilities are not all dropped",
                                           "no emptyDir at /tmp"]),
    ("cronjob_resources_fit_the_dump", ["no cpu in requests", "memory limit 64 MiB is below",
                                        "memory request above its limit"]),
    ("cronjob_keys_and_identity", ["has no iam.gke.io/gcp-service-account annotation",
                                   "BACKSTOP_DATABASE_URL must come from a secretKeyRef",
                                   "'file:/etc/backstop/keys/signing.sec.asc' is not a KMS-wrapped key",
                                   "Secret mount /etc/backstop/keys is not read-only"]),
]


@pytest.mark.parametrize("check,expected", BROKEN_K8S, ids=[c for c, _ in BROKEN_K8S])
def test_k8s_check_fails_on_broken_fixture(check, expected):
    text = "\n".join(K8S_CHECKS[check](_docs(FIXTURES / "cronjob_broken.yaml")))
    assert text, f"{check} accepted the broken fixture"
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not reported; got:\n{text}"


def test_every_check_has_a_broken_fixture():
    assert {c for _, c, _ in BROKEN_TF} >= set(TF_CHECKS)
    assert {c for c, _ in BROKEN_K8S} == set(K8S_CHECKS)
    assert {p.name for p in FIXTURES.iterdir() if p.is_dir()} == {f for f, _, _ in BROKEN_TF}


# --------------------------------------------------------------------------
# ... and on a broken copy of the real files
# --------------------------------------------------------------------------

TF_MUTATIONS = [
    # (pattern in infra/gcp/dump_job.tf, replacement, check that must then fail)
    (r"service_account = google_service_account\.dump\.email", "service_account = google_service_account.restore.email",
     "cloud_run_jobs_run_as_dump"),
    (r"memory = var\.dump_job_memory", 'memory = "100Mi"', "cloud_run_jobs_have_limits"),
    (r'\n\s*cpu\s+= var\.dump_job_cpu', "", "cloud_run_jobs_have_limits"),
    (r'value = "gcpkms:\$\{google_kms_crypto_key\.signing_key_wrap\.id\}:',
     'value = "file:', "cloud_run_jobs_keep_secrets_out_of_config"),
    (r"name = \"BACKSTOP_DATABASE_URL\"\n\s*value_source \{\n\s*secret_key_ref \{[^}]*\}\n\s*\}",
     'name = "BACKSTOP_DATABASE_URL"\n value = "postgres://u:pw@db/app"', "cloud_run_jobs_keep_secrets_out_of_config"),
    (r"\$\{google_cloud_run_v2_job\.dump\[0\]\.id\}:run", "${google_cloud_run_v2_job.other[0].id}:run",
     "cloud_run_jobs_are_scheduled"),
    (r"oauth_token \{", "oidc_token {", "scheduler_jobs_use_oidc"),
    (r'role\s+= "roles/run\.invoker"', 'role = "roles/run.developer"', "gcp_grants_within_table"),
    (r"name\s+= google_cloud_run_v2_job\.dump\[0\]\.name\n(\s*role\s+= \"roles/run\.invoker\"\n\s*member\s+= )"
     r"google_service_account\.scheduler_invoker\.member",
     "name = google_cloud_run_v2_job.dump[0].name\n\\1google_service_account.push_invoker.member",
     "gcp_grants_within_table"),
]


@pytest.mark.parametrize("pattern,replacement,check", TF_MUTATIONS,
                         ids=[f"{m[2]}:{i}" for i, m in enumerate(TF_MUTATIONS)])
def test_tf_check_fails_on_broken_real_dump_job(tmp_path, pattern, replacement, check):
    copy = tmp_path / "gcp"
    shutil.copytree(INFRA / "gcp", copy)
    target = copy / "dump_job.tf"
    broken, n = re.subn(pattern, replacement, target.read_text(), count=1)
    assert n == 1, f"mutation pattern {pattern!r} no longer matches infra/gcp/dump_job.tf; update the test"
    target.write_text(broken)
    check_fn = TF_CHECKS.get(check) or inv.CHECKS[check]
    assert check_fn(load_dir(copy)), f"{check} accepted dump_job.tf with {pattern!r} broken"


K8S_MUTATIONS = [
    # (pattern in infra/k8s/dump-cronjob.yaml, replacement, check that must then fail)
    (r"concurrencyPolicy: Forbid", "concurrencyPolicy: Replace", "cronjob_runs_once_at_a_time"),
    (r"\n\s*startingDeadlineSeconds: \d+", "", "cronjob_runs_once_at_a_time"),
    (r"readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "cronjob_is_non_root_and_read_only"),
    (r"runAsUser: 10001", "runAsUser: 0", "cronjob_is_non_root_and_read_only"),
    (r"mountPath: /tmp", "mountPath: /var/tmp", "cronjob_is_non_root_and_read_only"),
    (r"memory: 256Mi", "memory: 64Mi", "cronjob_resources_fit_the_dump"),
    (r"(limits:\n\s*)cpu: \"2\"\n\s*", r"\1", "cronjob_resources_fit_the_dump"),
    (r"iam\.gke\.io/gcp-service-account", "example.com/gcp-service-account", "cronjob_keys_and_identity"),
    (r"value: gcpkms:\$\{SIGNING_KEY_WRAP\}:/etc/backstop/keys/signing\.sec\.asc\.kms",
     "value: file:/etc/backstop/keys/signing.sec.asc", "cronjob_keys_and_identity"),
    (r"mountPath: /etc/backstop/keys\n(\s*)readOnly: true", r"mountPath: /etc/backstop/keys\n\1readOnly: false",
     "cronjob_keys_and_identity"),
]


@pytest.mark.parametrize("pattern,replacement,check", K8S_MUTATIONS,
                         ids=[f"{m[2]}:{i}" for i, m in enumerate(K8S_MUTATIONS)])
def test_k8s_check_fails_on_broken_real_cronjob(tmp_path, pattern, replacement, check):
    broken, n = re.subn(pattern, replacement, MANIFEST.read_text(), count=1)
    assert n == 1, f"mutation pattern {pattern!r} no longer matches {MANIFEST.name}; update the test"
    copy = tmp_path / MANIFEST.name
    copy.write_text(broken)
    assert K8S_CHECKS[check](_docs(copy)), f"{check} accepted {MANIFEST.name} with {pattern!r} broken"
