"""Helpers for the local AWS tests: clients per account, event capture through
EventBridge rule -> SQS, and real-shaped images (random blobs uploaded with
InitiateLayerUpload / UploadLayerPart / CompleteLayerUpload, Docker v2 / OCI
manifests and image indexes with correct sha256 digests and sizes)."""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.request
import uuid
from typing import Any

import boto3
from botocore.config import Config

ENDPOINT = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566").rstrip("/")

A = "111111111111"  # source account
B = "222222222222"  # cross-account destination
C = "333333333333"  # a "central" account
SRC_REGION = "us-west-2"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

ENVELOPE_KEYS = ["version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"]


def http(method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(ENDPOINT + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def reset() -> None:
    http("POST", "/moto-api/reset")


def configure(**settings: Any) -> Any:
    return http("POST", "/_localaws/replication", settings)


def flush(source_account: str | None = None) -> int:
    body = {} if source_account is None else {"source_account": source_account}
    return http("POST", "/_localaws/replication/flush", body)["completed"]


def client(service: str, region: str, account: str = A, retries: bool = True) -> Any:
    """A client acting as ``account``: a 12-digit access key id selects it.
    ``retries=False``: one attempt per call (see throttling as it comes)."""
    config = None if retries else Config(retries={"mode": "standard", "total_max_attempts": 1})
    return boto3.client(service, region_name=region, endpoint_url=ENDPOINT,
                        aws_access_key_id=account, aws_secret_access_key="secret", config=config)


def assumed_client(service: str, region: str, account: str, role: str = "replwatch-read") -> Any:
    """A client in ``account`` through STS AssumeRole from account A, as
    replwatch reaches destination accounts."""
    sts = client("sts", region, A)
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{role}",
                            RoleSessionName="replwatch-test")["Credentials"]
    return boto3.client(service, region_name=region, endpoint_url=ENDPOINT,
                        aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds["SessionToken"])


def queue_arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def allow_eventbridge(sqs: Any, url: str, *rule_arns: str) -> None:
    """Adds to the queue's policy what EventBridge needs to deliver the rules' events to it
    (EventBridge User Guide, "Using resource-based policies for Amazon EventBridge": Amazon SQS
    permissions), as a user must."""
    arn = queue_arn(sqs, url)
    current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"]).get("Attributes", {})
    policy = json.loads(current["Policy"]) if "Policy" in current else {"Version": "2012-10-17", "Statement": []}
    policy["Statement"].append({
        "Sid": f"events-{len(policy['Statement'])}", "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage", "Resource": arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": list(rule_arns)}},
    })
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})


def allow_replication_from(dest_account: str, region: str, *source_accounts: str) -> None:
    """The destination registry's permissions policy a user sets for cross-account replication
    (ECR User Guide, "Private registry policy examples"): the source accounts may replicate
    into, and create, every repository of ``dest_account`` in ``region``."""
    client("ecr", region, dest_account).put_registry_policy(policyText=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ReplicationAccessCrossAccount", "Effect": "Allow",
            "Principal": {"AWS": [f"arn:aws:iam::{a}:root" for a in source_accounts]},
            "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
            "Resource": f"arn:aws:ecr:{region}:{dest_account}:repository/*",
        }],
    }))


class EventTap:
    """An SQS queue behind an EventBridge rule on a default bus (the queue's policy lets the
    rule deliver)."""

    def __init__(self, events: Any, sqs: Any, pattern: dict[str, Any] | None = None) -> None:
        self.sqs = sqs
        name = "tap-" + uuid.uuid4().hex[:8]
        self.url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = queue_arn(sqs, self.url)
        rule_arn = events.put_rule(Name=name, EventPattern=json.dumps(pattern or {"source": ["aws.ecr"]}))["RuleArn"]
        allow_eventbridge(sqs, self.url, rule_arn)
        events.put_targets(Rule=name, Targets=[{"Id": "q", "Arn": arn}])

    def drain(self, expect: int | None = None, timeout: float = 3.0) -> list[dict[str, Any]]:
        """All messages now in the queue; with ``expect``, wait up to
        ``timeout`` for that many."""
        out: list[dict[str, Any]] = []
        deadline = time.time() + timeout
        while True:
            msgs = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages", [])
            for m in msgs:
                out.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
            if msgs:
                continue
            if expect is None or len(out) >= expect or time.time() > deadline:
                return out
            time.sleep(0.05)


def tap(account: str, region: str, pattern: dict[str, Any] | None = None, assumed: bool = False) -> EventTap:
    make = assumed_client if assumed else client
    return EventTap(make("events", region, account), make("sqs", region, account), pattern)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload_blob(ecr: Any, repo: str, data: bytes, part_size: int = 5 * 1024 * 1024) -> str:
    digest = sha256(data)
    upload_id = ecr.initiate_layer_upload(repositoryName=repo)["uploadId"]
    for start in range(0, len(data), part_size):
        part = data[start:start + part_size]
        ecr.upload_layer_part(repositoryName=repo, uploadId=upload_id, partFirstByte=start,
                              partLastByte=start + len(part) - 1, layerPartBlob=part)
    ecr.complete_layer_upload(repositoryName=repo, uploadId=upload_id, layerDigests=[digest])
    return digest


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def build_image(layer_sizes: tuple[int, ...] = (2048, 4096), oci: bool = True,
                platform: str = "linux/amd64") -> dict[str, Any]:
    """A random image: returns manifest text, media type, digest, blobs."""
    os_, arch = platform.split("/")
    layers = [os.urandom(n) for n in layer_sizes]
    config = dumps({
        "architecture": arch, "os": os_,
        "rootfs": {"type": "layers", "diff_ids": [sha256(l) for l in layers]},
        "config": {"Env": [f"NONCE={uuid.uuid4()}"]},
    }).encode()
    media = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest = dumps({
        "schemaVersion": 2,
        "mediaType": media,
        "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER if oci else DOCKER_LAYER, "digest": sha256(l), "size": len(l)}
                   for l in layers],
    })
    blobs = {sha256(config): config, **{sha256(l): l for l in layers}}
    return {"manifest": manifest, "media_type": media, "digest": sha256(manifest.encode()),
            "blobs": blobs, "platform": platform}


def push_image(ecr: Any, repo: str, tag: str | None = None, **kwargs: Any) -> dict[str, Any]:
    image = build_image(**kwargs)
    for data in image["blobs"].values():
        upload_blob(ecr, repo, data)
    args = {"repositoryName": repo, "imageManifest": image["manifest"],
            "imageManifestMediaType": image["media_type"], "imageDigest": image["digest"]}
    if tag:
        args["imageTag"] = tag
    pushed = ecr.put_image(**args)["image"]
    assert pushed["imageId"]["imageDigest"] == image["digest"]
    return image


def push_index(ecr: Any, repo: str, tag: str, platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64")) -> dict[str, Any]:
    children = [push_image(ecr, repo, None, platform=p) for p in platforms]
    manifest = dumps({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": c["media_type"], "digest": c["digest"], "size": len(c["manifest"].encode()),
            "platform": {"os": c["platform"].split("/")[0], "architecture": c["platform"].split("/")[1]},
        } for c in children],
    })
    digest = sha256(manifest.encode())
    ecr.put_image(repositoryName=repo, imageManifest=manifest, imageManifestMediaType=OCI_INDEX,
                  imageTag=tag, imageDigest=digest)
    return {"manifest": manifest, "media_type": OCI_INDEX, "digest": digest, "children": children}


def download(ecr: Any, repo: str, digest: str) -> bytes:
    url = ecr.get_download_url_for_layer(repositoryName=repo, layerDigest=digest)["downloadUrl"]
    assert url.startswith(ENDPOINT + "/"), url
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()


def image_ids(ecr: Any, repo: str) -> dict[str, list[str]]:
    """digest -> tags"""
    details = ecr.describe_images(repositoryName=repo)["imageDetails"]
    return {d["imageDigest"]: sorted(d.get("imageTags", [])) for d in details}


def statuses(ecr: Any, repo: str, digest: str) -> dict[tuple[str, str], dict[str, Any]]:
    resp = ecr.describe_image_replication_status(repositoryName=repo, imageId={"imageDigest": digest})
    assert resp["repositoryName"] == repo
    assert resp["imageId"]["imageDigest"] == digest
    return {(s["region"], s["registryId"]): s for s in resp["replicationStatuses"]}


def put_config(ecr: Any, *rules: tuple[list[tuple[str, str]], list[str] | None]) -> None:
    """rules: (destinations [(region, account)], prefixes or None)."""
    out = []
    for dests, prefixes in rules:
        rule: dict[str, Any] = {"destinations": [{"region": r, "registryId": a} for r, a in dests]}
        if prefixes:
            rule["repositoryFilters"] = [{"filter": p, "filterType": "PREFIX_MATCH"} for p in prefixes]
        out.append(rule)
    ecr.put_replication_configuration(replicationConfiguration={"rules": out})
