"""The real infra satisfies every invariant; each invariant fails on a broken
fixture and on a broken copy of the real infra."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import invariants as inv
from tfconfig import load_dir

INFRA = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
STATES = ("gcp", "aws")


@pytest.fixture(scope="module")
def real():
    return {state: load_dir(INFRA / state) for state in STATES}


# --- the real infra passes ------------------------------------------------


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("check", sorted(inv.CHECKS))
def test_real_infra_satisfies(real, state, check):
    assert inv.CHECKS[check](real[state]) == []


def test_real_infra_is_not_vacuous(real):
    """The checks above must have had something to look at."""
    gcp, aws = real["gcp"], real["aws"]
    for rtype, name in [
        ("google_storage_bucket", "backups"),
        ("google_pubsub_subscription", "replicator_push"),
        ("google_cloud_scheduler_job", "retention"),
        ("google_storage_notification", "finalize"),
        ("google_kms_crypto_key", "backup_key_wrap"),
        ("google_kms_crypto_key", "signing_key_wrap"),
        ("google_iam_workload_identity_pool_provider", "aws"),
        ("google_pubsub_topic", "dead_letter"),
        ("google_pubsub_topic", "alerts"),
    ]:
        assert (rtype, name) in gcp.resources, f"{rtype}.{name} missing from infra/gcp"
    parts = {n for n, _ in gcp.of_type("google_service_account")}
    assert parts == set(inv.GCP_PART_PERMISSIONS), "one service account per part, no others"
    bucket = gcp.resources[("google_storage_bucket", "backups")]
    assert len(inv.all_blocks(bucket, "lifecycle_rule")) >= 2
    assert {p for g in inv.gcp_grants(gcp) for p in [g["principal"]]} >= {"dump", "replicator", "retention", "restore"}

    assert ("aws_s3_bucket", "replica") in aws.resources
    assert {n for n, _ in aws.of_type("aws_iam_role")} == set(inv.AWS_ROLE_ACTIONS)
    found, _ = inv.aws_role_policies(aws)
    assert {role for role, *_ in found} == set(inv.AWS_ROLE_ACTIONS)
    for fn in ("replicator", "retention"):
        lam = aws.resources[("aws_lambda_function", fn)]
        assert lam["runtime"] == "provided.al2023" and lam["architectures"] == ["arm64"]
        assert aws.resources[("aws_lambda_function_url", fn)]["authorization_type"] == "NONE"
        assert ("aws_cloudwatch_log_group", fn) in aws.resources
    assert "count" in aws.resources[("aws_cloudwatch_event_rule", "retention")]


def test_lambda_environment_names(real):
    """The functions get every variable their config reads."""
    env = real["aws"].locals
    text = str(env["common_environment"]) + str(env["replicator_environment"]) + str(env["retention_environment"])
    for name in [
        "BACKSTOP_GCS_BUCKET", "BACKSTOP_S3_BUCKET", "BACKSTOP_SIGNING_PUBLIC_KEY", "BACKSTOP_RECIPIENTS",
        "BACKSTOP_ALERT_TOPIC", "BACKSTOP_OIDC_AUDIENCE", "BACKSTOP_OIDC_SERVICE_ACCOUNT",
        "BACKSTOP_REPLICATE_NAMESPACES", "BACKSTOP_RETENTION_POLICY", "BACKSTOP_DRY_RUN",
        "GOOGLE_CLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS",
    ]:
        assert name in text, name


def test_states_hand_over(real):
    """Every key of gcp's aws_tfvars output is a variable of infra/aws, and
    every key of aws's gcp_tfvars output is a variable of infra/gcp."""
    outputs = {}
    for state in STATES:
        for f in (INFRA / state).glob("outputs.tf"):
            text = f.read_text()
            for out in ("aws_tfvars", "gcp_tfvars"):
                m = re.search(rf'output "{out}" {{.*?value = {{(.*?)\n  }}', text, re.S)
                if m:
                    outputs[out] = re.findall(r"^\s*([a-z_]+)\s*=", m.group(1), re.M)
    assert set(outputs["aws_tfvars"]) <= set(real["aws"].variables)
    assert set(outputs["gcp_tfvars"]) <= set(real["gcp"].variables)
    assert len(outputs["aws_tfvars"]) >= 10


# --- each invariant fails on a broken fixture -----------------------------

BROKEN_FIXTURES = [
    # (fixture dir, check, expected fragments of the violations)
    ("gcs_delete_without_live", "gcs_delete_rules_fire", ["lifecycle_rule #1", "never fire"]),
    ("gcs_dynamic_delete_without_live", "gcs_delete_rules_fire", ['dynamic "lifecycle_rule" #1']),
    ("gcs_noncurrent_rule_unversioned", "gcs_no_noncurrent_rules_without_versioning",
     ["days_since_noncurrent_time", "num_newer_versions", 'with_state = "ARCHIVED"']),
    ("gcs_public_bucket", "gcs_public_access_prevented",
     ["public_access_prevention", "uniform_bucket_level_access", "allUsers", "google_storage_bucket_acl.acl"]),
    ("s3_public_access_open", "s3_public_access_blocked",
     ["block_public_policy is not true", "restrict_public_buckets is not true", "public-read"]),
    ("s3_no_public_access_block", "s3_public_access_blocked",
     ["no aws_s3_bucket_public_access_block", 'allows any principal ("*")']),
    ("push_without_oidc", "push_subscriptions_use_oidc",
     ["replicator_push: no oidc_token", "no_audience: oidc_token has no audience", "not https"]),
    ("scheduler_without_oidc", "scheduler_jobs_use_oidc", ["retention: no oidc_token"]),
    ("service_account_key", "no_long_lived_keys",
     ["google_service_account_key.replicator", "aws_iam_user.replicator", "aws_iam_access_key.replicator"]),
    ("s3_without_object_lock", "s3_versioning_and_object_lock",
     ["object_lock_enabled is not true", "versioning is not Enabled", "no Object Lock default retention"]),
    ("s3_lifecycle_incomplete", "s3_lifecycle_complete",
     ["no enabled noncurrent_version_expiration", "no enabled abort_incomplete_multipart_upload"]),
    ("gcp_dump_reads_and_deletes", "gcp_grants_within_table",
     ["dump may not hold", "storage.objects.delete", "storage.objects.get", "storage.objects.list"]),
    ("gcp_dump_decrypts_backups", "gcp_grants_within_table",
     ["dump may hold nothing on google_kms_crypto_key.backup_key_wrap"]),
    ("gcp_dump_create_unconditioned", "gcp_grants_within_table",
     ["dump's storage.objects.create on google_storage_bucket.backups must be conditioned to never under drills/"]),
    ("gcp_replicator_deletes", "gcp_grants_within_table", ["replicator may not hold storage.objects.delete"]),
    ("gcp_restore_deletes", "gcp_grants_within_table", ["restore may not hold", "storage.objects.delete"]),
    ("gcp_restore_drills_unconditioned", "gcp_grants_within_table",
     ["restore's storage.objects.create on google_storage_bucket.backups must be conditioned to only under drills/"]),
    ("gcp_project_wide_grant", "gcp_grants_within_table", ["retention may hold nothing on project"]),
    ("gcp_invoker_has_roles", "gcp_grants_within_table",
     ["push_invoker may hold nothing on google_storage_bucket.backups", "roles/pubsub.someNewRole, whose permissions are unknown"]),
    ("gcp_wif_impersonates_dump", "gcp_grants_within_table",
     ["'wif:dump', who is neither a part nor a known principal", "'user:someone@example.com'"]),
    ("aws_replicator_deletes", "aws_role_actions_within_table", ["replicator may not be allowed s3:DeleteObject"]),
    ("aws_retention_destroys_versions", "aws_role_actions_within_table",
     ["retention may not be allowed s3:DeleteObjectVersion", "retention may not be allowed s3:BypassGovernanceRetention",
      "S3 actions on '*'"]),
    ("aws_restore_wildcard", "aws_role_actions_within_table",
     ["restore may not be allowed s3:*", "is not a data.aws_iam_policy_document", "AmazonS3FullAccess",
      "aws_iam_role.helper: not a part of the table"]),
    ("aws_replicator_overwrites", "aws_puts_create_only",
     ["statement #1): replicator may s3:PutObject without", "statement #2): replicator", "statement #3): replicator"]),
    ("aws_trust_too_wide", "aws_role_trust_within_table",
     ["without StringEquals on accounts.google.com:sub", "not Service ec2.amazonaws.com"]),
]


@pytest.mark.parametrize("fixture,check,expected", BROKEN_FIXTURES, ids=[f[0] for f in BROKEN_FIXTURES])
def test_check_fails_on_broken_fixture(fixture, check, expected):
    violations = inv.CHECKS[check](load_dir(FIXTURES / fixture))
    assert violations, f"{check} accepted the broken fixture {fixture}"
    text = "\n".join(violations)
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not reported; got:\n{text}"


def test_every_check_has_a_broken_fixture():
    assert {c for _, c, _ in BROKEN_FIXTURES} == set(inv.CHECKS)


def test_every_fixture_is_used():
    assert {p.name for p in FIXTURES.iterdir() if p.is_dir()} == {f for f, _, _ in BROKEN_FIXTURES}


# --- and on a broken copy of the real infra -------------------------------

MUTATIONS = [
    # (state, file, pattern, replacement, check that must then fail)
    ("gcp", "storage.tf", r'(age\s+= var\.backup_max_age_days)\n\s*with_state\s+= "LIVE"', r"\1",
     "gcs_delete_rules_fire"),
    ("gcp", "storage.tf", r'(matches_prefix = lifecycle_rule\.value\.prefixes)\n\s*with_state\s+= "LIVE"', r"\1",
     "gcs_delete_rules_fire"),
    ("gcp", "storage.tf", r'public_access_prevention\s+= "enforced"', 'public_access_prevention = "inherited"',
     "gcs_public_access_prevented"),
    ("gcp", "pubsub.tf", r"\n\s*oidc_token \{[^}]*\}", "", "push_subscriptions_use_oidc"),
    ("gcp", "scheduler.tf", r"oidc_token \{[^}]*\}",
     "oauth_token {\n service_account_email = google_service_account.scheduler_invoker.email\n }",
     "scheduler_jobs_use_oidc"),
    ("gcp", "service_accounts.tf", r'permissions = \["storage\.objects\.create"\]',
     'permissions = ["storage.objects.create", "storage.objects.delete"]', "gcp_grants_within_table"),
    ("gcp", "storage.tf", r'role\s+= "roles/storage\.objectViewer"\n(\s*member\s+= google_service_account\.replicator)',
     'role = "roles/storage.objectAdmin"\n\\1', "gcp_grants_within_table"),
    ("gcp", "kms.tf", r"crypto_key_id = google_kms_crypto_key\.signing_key_wrap\.id\n(\s*role\s+= \"roles/cloudkms\.cryptoKeyDecrypter\"\n\s*member\s+= google_service_account\.dump)",
     "crypto_key_id = google_kms_crypto_key.backup_key_wrap.id\n\\1", "gcp_grants_within_table"),
    ("gcp", "wif.tf", r'member\s+= local\.wif_principal\["replicator"\]',
     'member = local.wif_principal["replicator"]\n}\nresource "google_service_account_iam_member" "x" {\n'
     'service_account_id = google_service_account.dump.name\nrole = "roles/iam.workloadIdentityUser"\n'
     'member = local.wif_principal["replicator"]', "gcp_grants_within_table"),
    ("gcp", "main.tf", r"\Z", '\nresource "google_service_account_key" "k" {\n'
     "  service_account_id = google_service_account.replicator.name\n}\n", "no_long_lived_keys"),
    ("aws", "s3.tf", r"object_lock_enabled = true", "object_lock_enabled = false", "s3_versioning_and_object_lock"),
    ("aws", "s3.tf", r'status = "Enabled"\n(\s*\}\n\}\n\nresource "aws_s3_bucket_object_lock_configuration")',
     'status = "Suspended"\n\\1', "s3_versioning_and_object_lock"),
    ("aws", "s3.tf", r"restrict_public_buckets = true", "restrict_public_buckets = false", "s3_public_access_blocked"),
    ("aws", "s3.tf", r"abort_incomplete_multipart_upload \{", "dummy {", "s3_lifecycle_complete"),
    ("aws", "iam.tf", r'"s3:GetObject", "s3:DeleteObject"', '"s3:GetObject", "s3:DeleteObject", "s3:DeleteObjectVersion"',
     "aws_role_actions_within_table"),
    ("aws", "iam.tf", r'actions   = \["s3:PutObject"\]', 'actions = ["s3:PutObject", "s3:DeleteObject"]',
     "aws_role_actions_within_table"),
    ("aws", "iam.tf", r'variable = "s3:if-none-match"', 'variable = "s3:if-match"', "aws_puts_create_only"),
    ("aws", "iam.tf", r'values   = \["\*"\]', 'values   = ["abc"]', "aws_puts_create_only"),
    ("aws", "iam.tf", r'variable = "accounts\.google\.com:sub"', 'variable = "accounts.google.com:email"',
     "aws_role_trust_within_table"),
]


@pytest.mark.parametrize("state,file,pattern,replacement,check", MUTATIONS,
                         ids=[f"{m[0]}/{m[1]}:{m[4]}:{i}" for i, m in enumerate(MUTATIONS)])
def test_check_fails_on_broken_real_infra(tmp_path, state, file, pattern, replacement, check):
    copy = tmp_path / state
    shutil.copytree(INFRA / state, copy)
    target = copy / file
    text = target.read_text()
    broken, n = re.subn(pattern, replacement, text, count=1)
    assert n == 1, f"mutation pattern {pattern!r} no longer matches infra/{state}/{file}; update the test"
    target.write_text(broken)
    assert inv.CHECKS[check](load_dir(copy)), f"{check} accepted infra/{state}/{file} with {pattern!r} broken"
