"""Invariants of Backstop's Terraform, checked on parsed HCL (no providers).

Each check takes a `Config` (one parsed directory: infra/gcp, infra/aws or a
fixture) and returns a list of violations, empty when the invariant holds.
The allow-lists below mirror the least-privilege table of DESIGN.md:

| part       | may                                                      | may not                              |
|------------|----------------------------------------------------------|--------------------------------------|
| dump       | create objects in the GCS bucket                         | read or delete backups, S3, decrypt  |
| replicator | read GCS backups, create S3 objects, publish alerts      | delete anything, decrypt             |
| retention  | list/delete in both buckets, read bucket config, alerts  | decrypt                              |
| restore    | read backups (GCS, S3), unwrap the restore key, drills/  | delete backups                       |

Two refinements, both narrowing: the dump job may unwrap its own *signing*
key (it signs manifests; DESIGN.md: "private half KMS-wrapped, used by the
dump job") but never the backup key, and the restore job's object creation
is limited to drills/ by an IAM condition (the dump's excludes drills/).
"""

from __future__ import annotations

import re
from typing import Callable

from tfconfig import Config, all_blocks, as_list, blocks, first, is_expression

Violations = list[str]

# --------------------------------------------------------------------------
# GCS lifecycle rules
# --------------------------------------------------------------------------

# Conditions that only ever match noncurrent versions.
NONCURRENT_ONLY_CONDITIONS = ("days_since_noncurrent_time", "noncurrent_time_before", "num_newer_versions")


def _gcs_versioned(body: dict) -> bool:
    """True only when versioning is literally enabled; unknown counts as no."""
    versioning = first(body, "versioning")
    return bool(versioning) and versioning.get("enabled") is True


def gcs_delete_rules_fire(cfg: Config) -> Violations:
    """Every Delete lifecycle rule of an unversioned GCS bucket states
    with_state = "LIVE". Otherwise the rule can end up applying to noncurrent
    versions only ("Live state = Non-current") and, with no versions to act
    on, never fires: the seed's backups were never deleted."""
    out = []
    for name, body in cfg.of_type("google_storage_bucket"):
        if _gcs_versioned(body):
            continue
        for label, rule in all_blocks(body, "lifecycle_rule"):
            action = first(rule, "action") or {}
            action_type = action.get("type")
            if is_expression(action_type):
                out.append(f"google_storage_bucket.{name}: {label}: action type {action_type!r} is not a literal, cannot check it")
                continue
            if action_type != "Delete":
                continue
            condition = first(rule, "condition") or {}
            state = condition.get("with_state")
            if state != "LIVE":
                out.append(
                    f"google_storage_bucket.{name}: {label}: Delete rule on an unversioned bucket has "
                    f"with_state = {state!r}, not \"LIVE\" (it would never fire)"
                )
    return out


def gcs_no_noncurrent_rules_without_versioning(cfg: Config) -> Violations:
    """An unversioned GCS bucket has no noncurrent objects, so a rule that
    only matches noncurrent versions is dead configuration."""
    out = []
    for name, body in cfg.of_type("google_storage_bucket"):
        if _gcs_versioned(body):
            continue
        for label, rule in all_blocks(body, "lifecycle_rule"):
            condition = first(rule, "condition") or {}
            used = [c for c in NONCURRENT_ONLY_CONDITIONS if c in condition]
            if condition.get("with_state") == "ARCHIVED":
                used.append('with_state = "ARCHIVED"')
            if used:
                out.append(
                    f"google_storage_bucket.{name}: {label}: noncurrent-only condition(s) {', '.join(used)} "
                    "on an unversioned bucket never match"
                )
    return out


# --------------------------------------------------------------------------
# No public access
# --------------------------------------------------------------------------

PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
GCP_ACL_RESOURCES = ("google_storage_bucket_acl", "google_storage_default_object_acl", "google_storage_object_acl",
                     "google_storage_bucket_access_control", "google_storage_object_access_control",
                     "google_storage_default_object_access_control")


def _iam_members(body: dict) -> list:
    return as_list(body.get("member")) + as_list(body.get("members"))


def gcs_public_access_prevented(cfg: Config) -> Violations:
    """GCS buckets enforce public access prevention and uniform bucket-level
    access; no ACL resources; no IAM grant to allUsers/allAuthenticatedUsers."""
    out = []
    for name, body in cfg.of_type("google_storage_bucket"):
        if body.get("public_access_prevention") != "enforced":
            out.append(f"google_storage_bucket.{name}: public_access_prevention is {body.get('public_access_prevention')!r}, not \"enforced\"")
        if body.get("uniform_bucket_level_access") is not True:
            out.append(f"google_storage_bucket.{name}: uniform_bucket_level_access is not true")
    for rtype in sorted(cfg.types()):
        if rtype in GCP_ACL_RESOURCES:
            for name, _ in cfg.of_type(rtype):
                out.append(f"{rtype}.{name}: ACLs are not allowed (uniform bucket-level access only)")
        if re.fullmatch(r"google_.*_iam_(member|binding|policy)", rtype):
            for name, body in cfg.of_type(rtype):
                for member in _iam_members(body):
                    if any(p in str(member) for p in PUBLIC_MEMBERS):
                        out.append(f"{rtype}.{name}: grants to the public ({member})")
    return out


S3_PUBLIC_ACCESS_FLAGS = ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")


def _refers_to(value, rtype: str, name: str) -> bool:
    return isinstance(value, str) and re.search(rf"\b{re.escape(rtype)}\.{re.escape(name)}\b", value) is not None


def _companions(cfg: Config, rtype: str, bucket: str) -> list[tuple[str, dict]]:
    """Resources of `rtype` whose `bucket` refers to aws_s3_bucket.<bucket>."""
    return [(n, b) for n, b in cfg.of_type(rtype) if _refers_to(b.get("bucket"), "aws_s3_bucket", bucket)]


def s3_public_access_blocked(cfg: Config) -> Violations:
    """Every S3 bucket has a public access block with all four flags true,
    no public canned ACL, and its bucket policy allows nothing to "*"."""
    out = []
    for name, _ in cfg.of_type("aws_s3_bucket"):
        pabs = _companions(cfg, "aws_s3_bucket_public_access_block", name)
        if not pabs:
            out.append(f"aws_s3_bucket.{name}: no aws_s3_bucket_public_access_block")
        for pab_name, pab in pabs:
            for flag in S3_PUBLIC_ACCESS_FLAGS:
                if pab.get(flag) is not True:
                    out.append(f"aws_s3_bucket_public_access_block.{pab_name}: {flag} is not true")
    for name, body in cfg.of_type("aws_s3_bucket_acl"):
        if body.get("acl") != "private":
            out.append(f"aws_s3_bucket_acl.{name}: acl {body.get('acl')!r} (only \"private\" is allowed)")
    for (dtype, dname), doc in cfg.data.items():
        if dtype != "aws_iam_policy_document":
            continue
        for i, st in enumerate(blocks(doc, "statement")):
            if st.get("effect", "Allow") != "Allow":
                continue
            for principal in blocks(st, "principals"):
                if "*" in as_list(principal.get("identifiers")) and principal.get("type") in ("*", "AWS"):
                    out.append(f"data.aws_iam_policy_document.{dname}: statement #{i + 1} allows any principal (\"*\")")
    return out


# --------------------------------------------------------------------------
# OIDC on the Google-side callers
# --------------------------------------------------------------------------


def _oidc_ok(where: str, oidc: dict | None) -> Violations:
    if oidc is None:
        return [f"{where}: no oidc_token (the Function URL is public; the handler needs a Google-signed token)"]
    out = []
    for key in ("service_account_email", "audience"):
        if not oidc.get(key):
            out.append(f"{where}: oidc_token has no {key}")
    return out


def push_subscriptions_use_oidc(cfg: Config) -> Violations:
    """Every Pub/Sub push subscription authenticates with an OIDC token
    (service account and audience both set), to an https endpoint."""
    out = []
    for name, body in cfg.of_type("google_pubsub_subscription"):
        push = first(body, "push_config")
        if push is None:
            continue
        where = f"google_pubsub_subscription.{name}"
        endpoint = push.get("push_endpoint", "")
        if not is_expression(endpoint) and not str(endpoint).startswith("https://"):
            out.append(f"{where}: push_endpoint {endpoint!r} is not https")
        out += _oidc_ok(where, first(push, "oidc_token"))
    return out


# A Google API (the Cloud Run Admin API that starts the dump job) accepts
# OAuth access tokens only.
GOOGLE_API_URI = re.compile(r"^https://[a-z0-9-]+\.googleapis\.com/")


def scheduler_jobs_use_oidc(cfg: Config) -> Violations:
    """Every Cloud Scheduler HTTP job sends an OIDC token (not an OAuth
    token, not nothing); a job calling a Google API sends an OAuth token of
    a service account instead, and no OIDC token."""
    out = []
    for name, body in cfg.of_type("google_cloud_scheduler_job"):
        target = first(body, "http_target")
        if target is None:
            continue
        where = f"google_cloud_scheduler_job.{name}"
        if GOOGLE_API_URI.match(str(target.get("uri", ""))):
            oauth = first(target, "oauth_token")
            if oauth is None or not oauth.get("service_account_email"):
                out.append(f"{where}: calls a Google API without an oauth_token of a service account")
            if first(target, "oidc_token") is not None:
                out.append(f"{where}: a Google API takes no oidc_token")
            continue
        out += _oidc_ok(where, first(target, "oidc_token"))
    return out


# --------------------------------------------------------------------------
# No long-lived credentials
# --------------------------------------------------------------------------

KEY_RESOURCES = ("google_service_account_key", "google_storage_hmac_key", "aws_iam_access_key", "aws_iam_user")


def no_long_lived_keys(cfg: Config) -> Violations:
    """No service-account keys (nor HMAC keys, IAM users or access keys):
    the functions reach GCP through Workload Identity Federation."""
    return [f"{rtype}.{name}: long-lived credentials are not allowed (use Workload Identity Federation)"
            for rtype in KEY_RESOURCES for name, _ in cfg.of_type(rtype)]


# --------------------------------------------------------------------------
# S3 replica bucket: versioning, Object Lock, lifecycle
# --------------------------------------------------------------------------


def s3_versioning_and_object_lock(cfg: Config) -> Violations:
    """Every S3 bucket is versioned and has Object Lock with a default
    retention (mode and a period)."""
    out = []
    for name, body in cfg.of_type("aws_s3_bucket"):
        if body.get("object_lock_enabled") is not True:
            out.append(f"aws_s3_bucket.{name}: object_lock_enabled is not true")
        versionings = _companions(cfg, "aws_s3_bucket_versioning", name)
        if not any((first(v, "versioning_configuration") or {}).get("status") == "Enabled" for _, v in versionings):
            out.append(f"aws_s3_bucket.{name}: versioning is not Enabled")
        locks = _companions(cfg, "aws_s3_bucket_object_lock_configuration", name)
        ok = False
        for _, lock in locks:
            retention = first(first(lock, "rule") or {}, "default_retention") or {}
            mode = retention.get("mode")
            if mode and (is_expression(mode) or mode in ("GOVERNANCE", "COMPLIANCE")) and (
                    retention.get("days") or retention.get("years")):
                ok = True
        if not ok:
            out.append(f"aws_s3_bucket.{name}: no Object Lock default retention (mode and days/years)")
    return out


def s3_lifecycle_complete(cfg: Config) -> Violations:
    """Every S3 bucket expires noncurrent versions and aborts incomplete
    multipart uploads (enabled rules)."""
    out = []
    for name, _ in cfg.of_type("aws_s3_bucket"):
        rules = [r for _, lc in _companions(cfg, "aws_s3_bucket_lifecycle_configuration", name)
                 for r in blocks(lc, "rule") if r.get("status") == "Enabled"]
        if not any(first(r, "noncurrent_version_expiration") for r in rules):
            out.append(f"aws_s3_bucket.{name}: no enabled noncurrent_version_expiration rule")
        if not any(first(r, "abort_incomplete_multipart_upload") for r in rules):
            out.append(f"aws_s3_bucket.{name}: no enabled abort_incomplete_multipart_upload rule")
    return out


# --------------------------------------------------------------------------
# GCP: each service account's permissions within the table
# --------------------------------------------------------------------------

GCS_READ = {
    "storage.objects.get", "storage.objects.list",
    "storage.folders.get", "storage.folders.list",
    "storage.managedFolders.get", "storage.managedFolders.list",
    "resourcemanager.projects.get", "resourcemanager.projects.list",
}
KMS_DECRYPT = {"cloudkms.cryptoKeyVersions.useToDecrypt", "cloudkms.locations.get", "cloudkms.locations.list",
               "resourcemanager.projects.get"}
KMS_ENCRYPT = {"cloudkms.cryptoKeyVersions.useToEncrypt", "cloudkms.locations.get", "cloudkms.locations.list",
               "resourcemanager.projects.get"}
PUBLISH = {"pubsub.topics.publish"}

# Permissions of the predefined roles a grant may name. A role missing here
# is a violation until its permissions are added (from the IAM roles
# reference), so that nothing is judged by its name alone.
PREDEFINED_ROLES: dict[str, set[str]] = {
    "roles/storage.objectViewer": GCS_READ,
    "roles/storage.objectCreator": {
        "storage.objects.create", "storage.folders.create", "storage.managedFolders.create",
        "storage.multipartUploads.create", "storage.multipartUploads.abort", "storage.multipartUploads.listParts",
    },
    "roles/storage.objectUser": GCS_READ | {
        "storage.objects.create", "storage.objects.delete", "storage.objects.update", "storage.objects.restore",
        "storage.multipartUploads.create", "storage.multipartUploads.abort", "storage.multipartUploads.list",
        "storage.multipartUploads.listParts", "storage.folders.create", "storage.folders.delete",
        "storage.folders.rename", "storage.managedFolders.create", "storage.managedFolders.delete",
    },
    "roles/storage.objectAdmin": GCS_READ | {
        "storage.objects.create", "storage.objects.delete", "storage.objects.update", "storage.objects.restore",
        "storage.objects.getIamPolicy", "storage.objects.setIamPolicy", "storage.objects.overrideUnlockedRetention",
        "storage.objects.setRetention", "storage.multipartUploads.create", "storage.multipartUploads.abort",
        "storage.multipartUploads.list", "storage.multipartUploads.listParts",
        "storage.managedFolders.create", "storage.managedFolders.delete",
    },
    "roles/storage.legacyBucketReader": {"storage.buckets.get", "storage.objects.list"},
    "roles/storage.legacyBucketWriter": {"storage.buckets.get", "storage.objects.list", "storage.objects.create",
                                         "storage.objects.delete", "storage.multipartUploads.create",
                                         "storage.multipartUploads.abort", "storage.multipartUploads.list",
                                         "storage.multipartUploads.listParts"},
    "roles/storage.admin": {"storage.*"},
    "roles/pubsub.publisher": PUBLISH,
    "roles/pubsub.subscriber": {"pubsub.subscriptions.consume", "pubsub.topics.attachSubscription",
                                "pubsub.snapshots.seek"},
    "roles/pubsub.editor": {"pubsub.*"},
    "roles/cloudkms.cryptoKeyDecrypter": KMS_DECRYPT,
    "roles/cloudkms.cryptoKeyEncrypter": KMS_ENCRYPT,
    "roles/cloudkms.cryptoKeyEncrypterDecrypter": KMS_ENCRYPT | KMS_DECRYPT,
    "roles/iam.workloadIdentityUser": {"iam.serviceAccounts.getAccessToken", "iam.serviceAccounts.getOpenIdToken",
                                       "iam.serviceAccounts.signBlob", "iam.serviceAccounts.signJwt",
                                       "iam.serviceAccounts.get", "iam.serviceAccounts.list"},
    "roles/iam.serviceAccountTokenCreator": {"iam.serviceAccounts.getAccessToken", "iam.serviceAccounts.getOpenIdToken",
                                             "iam.serviceAccounts.implicitDelegation", "iam.serviceAccounts.signBlob",
                                             "iam.serviceAccounts.signJwt", "iam.serviceAccounts.get",
                                             "iam.serviceAccounts.list"},
    "roles/iam.serviceAccountUser": {"iam.serviceAccounts.actAs", "iam.serviceAccounts.get",
                                     "iam.serviceAccounts.list"},
    "roles/run.invoker": {"run.jobs.run", "run.routes.invoke"},
    "roles/secretmanager.secretAccessor": {"secretmanager.versions.access"},
    "roles/owner": {"*"},
    "roles/editor": {"*"},
    "roles/viewer": {"*.get", "*.list"},
}

BUCKET = "google_storage_bucket.backups"
ALERTS = "google_pubsub_topic.alerts"
BACKUP_KEY = "google_kms_crypto_key.backup_key_wrap"
SIGNING_KEY = "google_kms_crypto_key.signing_key_wrap"
DUMP_JOB = "google_cloud_run_v2_job.dump"
DUMP_SECRETS = ("google_secret_manager_secret.dump_database_url", "google_secret_manager_secret.dump_signing_key")
SECRET_ACCESS = {"secretmanager.versions.access"}

# part (google_service_account resource name) -> target -> permissions.
GCP_PART_PERMISSIONS: dict[str, dict[str, set[str]]] = {
    # create objects only: no read, list, delete (hence no overwrite); as
    # the Cloud Run job, read its own secrets (database URL, wrapped key).
    "dump": {BUCKET: {"storage.objects.create"}, SIGNING_KEY: KMS_DECRYPT,
             **{secret: SECRET_ACCESS for secret in DUMP_SECRETS}},
    # read backups, publish alerts: no delete, no decrypt.
    "replicator": {BUCKET: GCS_READ, ALERTS: PUBLISH},
    # list/read/delete objects and read the bucket's config: no decrypt.
    "retention": {BUCKET: {"storage.objects.list", "storage.objects.get", "storage.objects.delete",
                           "storage.buckets.get"}, ALERTS: PUBLISH},
    # read backups, write drill records, unwrap the backup key: no delete.
    "restore": {BUCKET: GCS_READ | {"storage.objects.create"}, BACKUP_KEY: KMS_DECRYPT},
    # OIDC identities of Pub/Sub push and Cloud Scheduler: nothing at all,
    # but Cloud Scheduler's may start the dump job (an OAuth call).
    "push_invoker": {},
    "scheduler_invoker": {DUMP_JOB: {"run.jobs.run", "run.routes.invoke"}},
}

_DRILLS = r'resource\.name\.startsWith\("projects/_/buckets/[^"]+/objects/_drills/"\)'
# (part, permission) -> the IAM condition the grant must carry.
GCP_REQUIRED_CONDITIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("restore", "storage.objects.create"): (rf"^\s*{_DRILLS}\s*$", "only under drills/"),
    ("dump", "storage.objects.create"): (rf"^\s*!\s*{_DRILLS}\s*$", "never under drills/"),
}

# Principals other than the parts: (target, role) pairs they may hold.
GCP_OTHER_PRINCIPALS: dict[str, set[tuple[str, str]]] = {
    "gcs-service-agent": {("google_pubsub_topic.object_finalize", "roles/pubsub.publisher")},
    "pubsub-service-agent": {
        ("google_pubsub_topic.dead_letter", "roles/pubsub.publisher"),
        ("google_pubsub_subscription.replicator_push", "roles/pubsub.subscriber"),
        ("google_service_account.push_invoker", "roles/iam.serviceAccountTokenCreator"),
    },
    # The Lambda roles, through Workload Identity Federation: each may act as
    # its own service account, and only the two functions may.
    "wif:replicator": {("google_service_account.replicator", "roles/iam.workloadIdentityUser")},
    "wif:retention": {("google_service_account.retention", "roles/iam.workloadIdentityUser")},
    "var:dump_workload_identity_members": {("google_service_account.dump", "roles/iam.workloadIdentityUser")},
    "var:restore_workload_identity_members": {("google_service_account.restore", "roles/iam.workloadIdentityUser")},
    "var:kms_encrypter_members": {(BACKUP_KEY, "roles/cloudkms.cryptoKeyEncrypter"),
                                  (SIGNING_KEY, "roles/cloudkms.cryptoKeyEncrypter")},
}

# Where each IAM resource type names the resource it grants on.
_GCP_IAM_TARGET_ATTR = {
    "google_storage_bucket_iam_member": "bucket",
    "google_storage_bucket_iam_binding": "bucket",
    "google_pubsub_topic_iam_member": "topic",
    "google_pubsub_topic_iam_binding": "topic",
    "google_pubsub_subscription_iam_member": "subscription",
    "google_pubsub_subscription_iam_binding": "subscription",
    "google_kms_crypto_key_iam_member": "crypto_key_id",
    "google_kms_crypto_key_iam_binding": "crypto_key_id",
    "google_kms_key_ring_iam_member": "key_ring_id",
    "google_kms_key_ring_iam_binding": "key_ring_id",
    "google_service_account_iam_member": "service_account_id",
    "google_service_account_iam_binding": "service_account_id",
    "google_secret_manager_secret_iam_member": "secret_id",
    "google_secret_manager_secret_iam_binding": "secret_id",
    "google_cloud_run_v2_job_iam_member": "name",
    "google_cloud_run_v2_job_iam_binding": "name",
}

_REF = re.compile(r"\b((?:google|aws)_[a-z0-9_]+)\.([A-Za-z0-9_-]+)")


def _target(cfg: Config, rtype: str, body: dict) -> str:
    if re.fullmatch(r"google_project_iam_(member|binding)", rtype):
        return "project"
    attr = _GCP_IAM_TARGET_ATTR.get(rtype)
    value = cfg.resolve(body.get(attr)) if attr else None
    m = _REF.search(value) if isinstance(value, str) else None
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    return f"{rtype}:{value!r}"


def _principal(cfg: Config, member: str, resource_body: dict) -> str:
    """A name for who is granted: a part, a service agent, a WIF principal,
    a variable's members, or the literal member."""
    m = re.search(r"\bgoogle_service_account\.([A-Za-z0-9_-]+)\.(member|email)", member)
    if m:
        return m.group(1)
    if "google_storage_project_service_account" in member:
        return "gcs-service-agent"
    resolved = member
    local = re.search(r"\blocal\.([A-Za-z0-9_]+)(?:\[\"([^\"]+)\"\])?", member)
    if local:
        resolved = str(cfg.locals.get(local.group(1), member))
        if "principalSet://" in resolved and local.group(2):
            return f"wif:{local.group(2)}"
    if "gcp-sa-pubsub" in resolved:
        return "pubsub-service-agent"
    if "principalSet://" in resolved or "principal://" in resolved:
        role = re.search(r"assumed-role/.*?([a-z]+)$", resolved)
        return f"wif:{role.group(1)}" if role else f"wif:?{resolved}"
    var = re.search(r"\bvar\.([A-Za-z0-9_]+)", member)
    if var:
        return f"var:{var.group(1)}"
    if re.search(r"\beach\.(value|key)\b", member):
        source = re.search(r"\bvar\.([A-Za-z0-9_]+)", str(resource_body.get("for_each", "")))
        if source:
            return f"var:{source.group(1)}"
    return member


def _role_permissions(cfg: Config, role: str) -> tuple[set[str] | None, str]:
    """(permissions, description) of a role: predefined from the table, custom
    from its google_project_iam_custom_role resource; None if unknown."""
    m = re.search(r"\bgoogle_project_iam_custom_role\.([A-Za-z0-9_-]+)", role)
    if m:
        custom = cfg.resources.get(("google_project_iam_custom_role", m.group(1)))
        if custom is None:
            return None, f"custom role {m.group(1)} (not defined here)"
        perms = custom.get("permissions")
        if not isinstance(perms, list):
            return None, f"custom role {m.group(1)} (permissions not a literal list)"
        return set(perms), f"custom role {m.group(1)}"
    if role in PREDEFINED_ROLES:
        return PREDEFINED_ROLES[role], role
    return None, role


def gcp_grants(cfg: Config) -> list[dict]:
    """Every IAM grant of the directory: principal, target, role, condition."""
    grants = []
    for rtype in sorted(cfg.types()):
        if not re.fullmatch(r"google_.*_iam_(member|binding|policy)", rtype):
            continue
        for name, body in cfg.of_type(rtype):
            where = f"{rtype}.{name}"
            if rtype.endswith("_iam_policy"):
                grants.append({"where": where, "principal": "?", "target": "?", "role": "?", "condition": None,
                               "error": "authoritative IAM policies cannot be checked statically; use _iam_member"})
                continue
            condition = first(body, "condition")
            for member in _iam_members(body):
                grants.append({
                    "where": where,
                    "principal": _principal(cfg, str(member), body),
                    "target": _target(cfg, rtype, body),
                    "role": str(body.get("role")),
                    "condition": cfg.resolve(condition.get("expression")) if condition else None,
                })
    return grants


def gcp_grants_within_table(cfg: Config) -> Violations:
    """Each service account holds only the permissions of its part in the
    table, on the resources of its part, with the required conditions; no
    project-wide grants; other principals (service agents, WIF, operators)
    only their listed (resource, role) pairs."""
    out = []
    for g in gcp_grants(cfg):
        where, principal, target, role = g["where"], g["principal"], g["target"], g["role"]
        if "error" in g:
            out.append(f"{where}: {g['error']}")
            continue
        if principal in GCP_PART_PERMISSIONS:
            perms, desc = _role_permissions(cfg, role)
            if perms is None:
                out.append(f"{where}: {principal} gets {desc}, whose permissions are unknown "
                           "(add them to PREDEFINED_ROLES or use a custom role)")
                continue
            allowed = GCP_PART_PERMISSIONS[principal].get(target)
            if allowed is None:
                out.append(f"{where}: {principal} may hold nothing on {target} (gets {desc})")
                continue
            extra = sorted(p for p in perms if p not in allowed)
            if extra:
                out.append(f"{where}: {principal} may not hold {', '.join(extra)} on {target} (via {desc})")
            for perm in sorted(perms):
                required = GCP_REQUIRED_CONDITIONS.get((principal, perm))
                if required and not (g["condition"] and re.search(required[0], g["condition"])):
                    out.append(f"{where}: {principal}'s {perm} on {target} must be conditioned to {required[1]} "
                               f"(condition: {g['condition']!r})")
        elif principal in GCP_OTHER_PRINCIPALS:
            if (target, role) not in GCP_OTHER_PRINCIPALS[principal]:
                out.append(f"{where}: {principal} may not hold {role} on {target}")
        else:
            out.append(f"{where}: grant to {principal!r}, who is neither a part nor a known principal")
    return out


# --------------------------------------------------------------------------
# AWS: each role's actions within the table
# --------------------------------------------------------------------------

LAMBDA_LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}

# aws_iam_role resource name -> allowed actions.
AWS_ROLE_ACTIONS: dict[str, set[str]] = {
    # Create objects (multipart included). GetObject/ListBucket: check an
    # existing copy's checksum before copying (a redelivered event finds the
    # work done; ListBucket makes a missing object 404, not 403). Reading
    # ciphertext without a key discloses nothing. No delete of any kind.
    "replicator": {"s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
                   "s3:GetObject", "s3:ListBucket", "s3:ListBucketMultipartUploads"} | LAMBDA_LOGS,
    # List and delete (current versions only: Object Lock keeps the
    # version), read manifests and the bucket's configuration for the audit.
    "retention": {"s3:ListBucket", "s3:GetObject", "s3:DeleteObject", "s3:GetBucketVersioning",
                  "s3:GetLifecycleConfiguration", "s3:GetBucketObjectLockConfiguration",
                  "s3:ListBucketMultipartUploads", "s3:AbortMultipartUpload"} | LAMBDA_LOGS,
    # Read backups (fallback when GCS is unavailable). No delete.
    "restore": {"s3:GetObject", "s3:ListBucket"},
}

# Who may assume each role: (principal type, identifier).
AWS_ROLE_TRUST: dict[str, tuple[str, str]] = {
    "replicator": ("Service", "lambda.amazonaws.com"),
    "retention": ("Service", "lambda.amazonaws.com"),
    "restore": ("Federated", "accounts.google.com"),
}


def _policy_document(cfg: Config, expr) -> tuple[str, dict | None]:
    m = re.search(r"\bdata\.aws_iam_policy_document\.([A-Za-z0-9_-]+)\.json", str(expr))
    if m:
        return f"data.aws_iam_policy_document.{m.group(1)}", cfg.data.get(("aws_iam_policy_document", m.group(1)))
    return str(expr), None


def _role_of(value) -> str | None:
    m = re.search(r"\baws_iam_role\.([A-Za-z0-9_-]+)", str(value))
    return m.group(1) if m else None


def aws_role_policies(cfg: Config) -> tuple[list[tuple[str, str, str, dict | None]], Violations]:
    """(role, where, document name, document) for every policy attached to a
    role, and violations for attachments that cannot be checked."""
    found, out = [], []
    for name, body in cfg.of_type("aws_iam_role"):
        if body.get("managed_policy_arns"):
            out.append(f"aws_iam_role.{name}: managed_policy_arns (managed policies are not allowed)")
        for i, inline in enumerate(blocks(body, "inline_policy")):
            doc_name, doc = _policy_document(cfg, inline.get("policy"))
            found.append((name, f"aws_iam_role.{name} inline_policy #{i + 1}", doc_name, doc))
    for name, body in cfg.of_type("aws_iam_role_policy"):
        doc_name, doc = _policy_document(cfg, body.get("policy"))
        found.append((_role_of(body.get("role")), f"aws_iam_role_policy.{name}", doc_name, doc))
    for name, body in cfg.of_type("aws_iam_role_policy_attachment"):
        arn = str(body.get("policy_arn"))
        pol = re.search(r"\baws_iam_policy\.([A-Za-z0-9_-]+)", arn)
        if pol and ("aws_iam_policy", pol.group(1)) in cfg.resources:
            doc_name, doc = _policy_document(cfg, cfg.resources[("aws_iam_policy", pol.group(1))].get("policy"))
            found.append((_role_of(body.get("role")), f"aws_iam_role_policy_attachment.{name}", doc_name, doc))
        else:
            out.append(f"aws_iam_role_policy_attachment.{name}: attaches {arn} (managed policies are not allowed)")
    return found, out


def aws_role_actions_within_table(cfg: Config) -> Violations:
    """Each IAM role's Allow statements name only the actions of its part,
    without wildcards or NotAction, and its S3 actions name the bucket."""
    found, out = aws_role_policies(cfg)
    for name, _ in cfg.of_type("aws_iam_role"):
        if name not in AWS_ROLE_ACTIONS:
            out.append(f"aws_iam_role.{name}: not a part of the table ({', '.join(sorted(AWS_ROLE_ACTIONS))})")
    for role, where, doc_name, doc in found:
        if role not in AWS_ROLE_ACTIONS:
            out.append(f"{where}: attached to {role!r}, which is not a part of the table")
            continue
        if doc is None:
            out.append(f"{where}: policy {doc_name} is not a data.aws_iam_policy_document (cannot check it)")
            continue
        allowed = AWS_ROLE_ACTIONS[role]
        for i, st in enumerate(blocks(doc, "statement")):
            if st.get("effect", "Allow") != "Allow":
                continue
            label = f"{where} ({doc_name} statement #{i + 1})"
            if st.get("not_actions") or st.get("not_resources"):
                out.append(f"{label}: NotAction/NotResource are not allowed")
            actions = [str(a) for a in as_list(st.get("actions"))]
            for action in actions:
                if "*" in action or action not in allowed:
                    out.append(f"{label}: {role} may not be allowed {action}")
            if any(a.startswith("s3:") for a in actions):
                for res in as_list(st.get("resources")):
                    if not re.search(r"\baws_s3_bucket\.[A-Za-z0-9_-]+\.arn\b", str(res)):
                        out.append(f"{label}: S3 actions on {res!r} (must name the replica bucket)")
    return out


def aws_role_trust_within_table(cfg: Config) -> Violations:
    """Each role may be assumed only by its part's principal: the function
    roles by Lambda, the restore role by Google identities with a condition
    on the service account's unique id (accounts.google.com:sub)."""
    out = []
    for name, body in cfg.of_type("aws_iam_role"):
        expected = AWS_ROLE_TRUST.get(name)
        if expected is None:
            continue  # reported by aws_role_actions_within_table
        doc_name, doc = _policy_document(cfg, body.get("assume_role_policy"))
        if doc is None:
            out.append(f"aws_iam_role.{name}: assume_role_policy {doc_name} is not a data.aws_iam_policy_document")
            continue
        for i, st in enumerate(blocks(doc, "statement")):
            if st.get("effect", "Allow") != "Allow":
                continue
            label = f"aws_iam_role.{name} ({doc_name} statement #{i + 1})"
            for p in blocks(st, "principals"):
                for ident in as_list(p.get("identifiers")):
                    if (p.get("type"), ident) != expected:
                        out.append(f"{label}: {name} may be assumed only by {expected[0]} {expected[1]}, not {p.get('type')} {ident}")
            if expected[0] == "Federated":
                subs = [c for c in blocks(st, "condition")
                        if c.get("variable") == "accounts.google.com:sub" and c.get("test") == "StringEquals"
                        and as_list(c.get("values"))]
                if not subs:
                    out.append(f"{label}: web-identity trust without StringEquals on accounts.google.com:sub "
                               "(any Google identity could assume the role)")
    return out


# PutObject also authorizes CompleteMultipartUpload, UploadPart and
# CreateMultipartUpload. An Allow of it must carry one of these conditions:
# If-None-Match: * (create only: PutObject, CompleteMultipartUpload), or
# s3:ObjectCreationOperation = false (the steps before completion, which take
# no conditional header and make no object visible).
CREATE_ONLY_CONDITIONS = (
    ("StringEquals", "s3:if-none-match", ["*"]),
    ("Bool", "s3:ObjectCreationOperation", ["false"]),
)


def aws_puts_create_only(cfg: Config) -> Violations:
    """Every Allow of s3:PutObject to a role is conditioned to create only
    (s3:if-none-match = "*"), or to the steps of a multipart upload before its
    completion (s3:ObjectCreationOperation = false): no role may overwrite a
    replica, and the replicator must find an object it did not write."""
    found, out = aws_role_policies(cfg)
    for role, where, doc_name, doc in found:
        if doc is None:
            continue  # reported by aws_role_actions_within_table
        for i, st in enumerate(blocks(doc, "statement")):
            if st.get("effect", "Allow") != "Allow" or "s3:PutObject" not in as_list(st.get("actions")):
                continue
            conditions = [(c.get("test"), c.get("variable"), as_list(c.get("values"))) for c in blocks(st, "condition")]
            if not any(c in conditions for c in CREATE_ONLY_CONDITIONS):
                out.append(f"{where} ({doc_name} statement #{i + 1}): {role} may s3:PutObject without "
                           's3:if-none-match = "*" (it could overwrite a replica)')
    return out


# --------------------------------------------------------------------------

CHECKS: dict[str, Callable[[Config], Violations]] = {
    f.__name__: f
    for f in (
        gcs_delete_rules_fire,
        gcs_no_noncurrent_rules_without_versioning,
        gcs_public_access_prevented,
        s3_public_access_blocked,
        push_subscriptions_use_oidc,
        scheduler_jobs_use_oidc,
        no_long_lived_keys,
        s3_versioning_and_object_lock,
        s3_lifecycle_complete,
        gcp_grants_within_table,
        aws_role_actions_within_table,
        aws_role_trust_within_table,
        aws_puts_create_only,
    )
}


def run_all(cfg: Config) -> Violations:
    return [f"[{name}] {v}" for name, check in CHECKS.items() for v in check(cfg)]
