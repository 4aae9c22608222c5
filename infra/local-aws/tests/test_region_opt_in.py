"""Region opt-in per account (Account Management) and replication refusing a Region either
account has not enabled."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from localaws import (
    A, B, SRC_REGION, allow_replication_from, client, configure, flush, http, push_image, put_config, statuses,
    tap,
)

OPT_IN = "eu-south-1"
REPO = "team-a/web"


def _account(account: str = A):
    return client("account", "us-east-1", account)


def _status(account: str, region: str = OPT_IN) -> str:
    answer = _account(account).get_region_opt_status(RegionName=region)
    assert answer["RegionName"] == region
    return answer["RegionOptStatus"]


def _error(err):
    return (err.value.response["Error"]["Code"], err.value.response["ResponseMetadata"]["HTTPStatusCode"])


def _pending_opt_ins():
    return [j for j in http("GET", "/_localaws/replication")["pending"] if j["kind"] == "region-opt-in"]


def test_default_regions_are_enabled_by_default_and_opt_in_regions_disabled_per_account():
    for region in ("us-east-1", "us-west-2", "eu-west-1", "ap-northeast-3", "sa-east-1"):
        assert _status(A, region) == "ENABLED_BY_DEFAULT"
    for region in ("af-south-1", "ap-east-1", "ap-southeast-7", "il-central-1", "mx-central-1", OPT_IN):
        assert _status(A, region) == "DISABLED"
    _account(A).enable_region(RegionName=OPT_IN)
    flush(A)
    assert _status(A) == "ENABLED"
    assert _status(B) == "DISABLED"  # per account


def test_enabling_and_disabling_take_time_and_conflict_meanwhile():
    configure(region_opt_in_seconds=3600)
    account = _account(A)
    assert account.enable_region(RegionName=OPT_IN)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert _status(A) == "ENABLING"
    assert _pending_opt_ins() == [{"source": f"{A}/{OPT_IN}", "destination": f"{OPT_IN}/{A}",
                                   "due_in_seconds": pytest.approx(3600, abs=5), "paused": False,
                                   "kind": "region-opt-in"}]
    account.enable_region(RegionName=OPT_IN)  # again: nothing changes
    assert len(_pending_opt_ins()) == 1
    with pytest.raises(ClientError) as err:
        account.disable_region(RegionName=OPT_IN)
    assert _error(err) == ("ConflictException", 409)

    assert flush(A) == 1
    assert _status(A) == "ENABLED"
    account.disable_region(RegionName=OPT_IN)
    assert _status(A) == "DISABLING"
    with pytest.raises(ClientError) as err:
        account.enable_region(RegionName=OPT_IN)
    assert _error(err) == ("ConflictException", 409)
    flush(A)
    assert _status(A) == "DISABLED"
    account.disable_region(RegionName=OPT_IN)  # already disabled: nothing to do
    assert _pending_opt_ins() == []


def test_default_regions_and_unknown_names_are_refused():
    account = _account(A)
    for call in (account.enable_region, account.disable_region):
        with pytest.raises(ClientError) as err:
            call(RegionName="us-east-1")
        assert _error(err) == ("ValidationException", 400)
        assert err.value.response["reason"] == "invalidRegionOptTarget"
    with pytest.raises(ClientError) as err:
        account.get_region_opt_status(RegionName="xx-nowhere-1")
    assert _error(err) == ("ValidationException", 400)


def test_list_regions_pages_and_filters():
    account = _account(A)
    account.enable_region(RegionName=OPT_IN)
    flush(A)
    listed, token = [], None
    while True:
        page = account.list_regions(MaxResults=7, **({"NextToken": token} if token else {}))
        assert len(page["Regions"]) <= 7
        listed += page["Regions"]
        token = page.get("NextToken")
        if not token:
            break
    by_name = {r["RegionName"]: r["RegionOptStatus"] for r in listed}
    assert len(by_name) == len(listed) > 30
    assert by_name["us-east-1"] == "ENABLED_BY_DEFAULT"
    assert by_name[OPT_IN] == "ENABLED"
    assert by_name["af-south-1"] == "DISABLED"
    enabled = account.list_regions(RegionOptStatusContains=["ENABLED"])["Regions"]
    assert enabled == [{"RegionName": OPT_IN, "RegionOptStatus": "ENABLED"}]


def test_another_account_only_from_the_management_account_with_trusted_access():
    account = _account(A)
    with pytest.raises(ClientError) as err:  # no organization
        account.get_region_opt_status(RegionName=OPT_IN, AccountId=B)
    assert _error(err) == ("AccessDeniedException", 403)

    org = client("organizations", "us-east-1", A)
    org.create_organization(FeatureSet="ALL")
    member = org.create_account(AccountName="member", Email="member@example.com")["CreateAccountStatus"]["AccountId"]
    with pytest.raises(ClientError) as err:  # no trusted access for Account Management yet
        account.get_region_opt_status(RegionName=OPT_IN, AccountId=member)
    assert _error(err) == ("AccessDeniedException", 403)

    org.enable_aws_service_access(ServicePrincipal="account.amazonaws.com")
    assert account.get_region_opt_status(RegionName=OPT_IN, AccountId=member)["RegionOptStatus"] == "DISABLED"
    account.enable_region(RegionName=OPT_IN, AccountId=member)
    flush(member)
    assert _status(member) == "ENABLED"
    assert _status(A) == "DISABLED"
    with pytest.raises(ClientError) as err:  # not a member
        account.get_region_opt_status(RegionName=OPT_IN, AccountId=B)
    assert _error(err) == ("AccessDeniedException", 403)
    with pytest.raises(ClientError) as err:  # "The management account can't specify its own AccountId"
        account.get_region_opt_status(RegionName=OPT_IN, AccountId=A)
    assert _error(err) == ("ValidationException", 400)


def test_replication_needs_the_region_enabled_in_both_accounts():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([(OPT_IN, A), (OPT_IN, B), ("eu-west-1", B)], None))
    for region in (OPT_IN, "eu-west-1"):
        allow_replication_from(B, region, A)
    failures = tap(A, OPT_IN, {"source": ["aws.ecr"], "detail": {"result": ["FAILED"]}})

    def push_and_settle(tag):
        image = push_image(ecr, REPO, tag)
        flush(A)
        return {dest: (s["status"], s.get("failureCode"))
                for dest, s in statuses(ecr, REPO, image["digest"]).items()}

    # Neither account opted in: every job to the opt-in Region fails; the default Region works.
    assert push_and_settle("v1") == {
        (OPT_IN, A): ("FAILED", "REGION_NOT_ENABLED"),
        (OPT_IN, B): ("FAILED", "REGION_NOT_ENABLED"),
        ("eu-west-1", B): ("COMPLETE", None),
    }
    (event,) = failures.drain(expect=1)
    assert event["detail"]["result"] == "FAILED" and event["detail"]["image-tag"] == "v1"

    # The source account opted in: its own destination works, the other account's does not.
    _account(A).enable_region(RegionName=OPT_IN)
    flush(A)
    assert push_and_settle("v2")[(OPT_IN, A)] == ("COMPLETE", None)
    assert push_and_settle("v3")[(OPT_IN, B)] == ("FAILED", "REGION_NOT_ENABLED")

    # Only the destination account opted in: refused too ("both the source and destination
    # accounts must be opted-in").
    _account(A).disable_region(RegionName=OPT_IN)
    _account(B).enable_region(RegionName=OPT_IN)
    flush(A)
    flush(B)
    assert push_and_settle("v4")[(OPT_IN, B)] == ("FAILED", "REGION_NOT_ENABLED")

    _account(A).enable_region(RegionName=OPT_IN)
    flush(A)
    assert push_and_settle("v5") == {
        (OPT_IN, A): ("COMPLETE", None),
        (OPT_IN, B): ("COMPLETE", None),
        ("eu-west-1", B): ("COMPLETE", None),
    }
    # Enabling replicates nothing pushed before (it is decided when the job runs).
    replicas = client("ecr", OPT_IN, A).describe_images(repositoryName=REPO)["imageDetails"]
    assert sorted(t for d in replicas for t in d.get("imageTags", [])) == ["v2", "v3", "v5"]
