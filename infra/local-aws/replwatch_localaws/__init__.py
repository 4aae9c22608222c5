"""replwatch's local AWS: moto 5.2.5 server plus the ECR behaviour moto lacks.

moto (https://github.com/getmoto/moto) already gives us ECR, STS, EventBridge,
SQS, SNS, DynamoDB, CloudWatch per account and per Region. What replwatch needs
on top, and moto 5.2.5 does not do, is added by the modules of this package,
each of which documents the AWS behaviour it reproduces:

- ``accounts``:    a 12-digit access key id selects that account (convenience).
- ``eventbridge``: events keep their ``account`` field when delivered to SQS,
                   disabled rules stop matching, bus-to-bus forwarding keeps the
                   original envelope, bus policies enforced on
                   cross-account forwarding (refused events to the target's
                   dead-letter queue); ``emit()`` for service events.
- ``ecr``:         PutImage checks, real digests, layer bytes kept,
                   GetDownloadUrlForLayer, DescribeImageReplicationStatus,
                   multi-rule replication configurations, ECR events.
- ``replication``: the replication engine (rules, delays, failures, pausing,
                   event loss/duplication) driven by ``/_localaws/replication``;
                   cross-account replication needs the destination's registry
                   permissions policy.
- ``backfill``:    StartReplicationBackfill & co., on the replication engine.
- ``storage_class``: UpdateImageStorageClass (archive / restore), image
                   status, archived images refused to pulls, restore events and
                   replication.
- ``referrers``:   OCI 1.1 referrers: ListImageReferrers (a manifest whose
                   ``subject`` names a digest refers to it), DescribeImages'
                   ``subjectManifestDigest``.
- ``registry``:    the registry's OCI distribution API (``/v2/``: what docker,
                   skopeo, crane speak) on the same repositories, images, blobs,
                   tags and referrers; GetAuthorizationToken's Basic credentials
                   and a ``proxyEndpoint`` that works here; manifest PUT = PutImage.
- ``templates``:   repository creation templates (Create/Describe/Update/
                   DeleteRepositoryCreationTemplate), applied by replication.
- ``region_opt_in``: Region opt-in per account (Account Management's
                   GetRegionOptStatus, ListRegions, EnableRegion, DisableRegion);
                   replication to a Region either account has not enabled fails.
- ``trust``:       AssumeRole checks trust policies in accounts that have IAM
                   roles (moto lets anyone assume anything).
- ``policies``:    resource-based policy evaluation (principals, actions,
                   resources, every cheap condition operator, fail closed on
                   the rest) and the request context of a request.
- ``sqs_policy``:  queue policies enforced on SendMessage(Batch) and on
                   EventBridge deliveries to queues and dead-letter queues.
- ``sns_policy``:  topic policies enforced on Publish(Batch).
- ``alarm_actions``: CloudWatch alarm state changes notify their SNS topics,
                   as the topics' policies allow.
- ``paging``:      maxResults/nextToken for DescribeRepositories,
                   DescribeImages and ListImages.
- ``faults``:      ECR and DynamoDB API throttling on demand (``/_localaws/faults``).
- ``network``:     a modelled round trip and stream rate for ECR calls,
                   registry requests and blob downloads (``/_localaws/network``),
                   off by default.
- ``calls``:       ECR API call, registry request, layer upload and blob
                   download counters (``/_localaws/calls``).
- ``meter``:       every AWS request by service and operation, and the units
                   AWS bills (DynamoDB capacity, SQS/SNS requests and
                   EventBridge events per 64 KB) (``/_localaws/meter``).
- ``load_scale``:  moto's SQS and DynamoDB queries without their passes over
                   every message and item, so that load runs of 50,000 events
                   finish (same answers).
- ``cloudwatch_cbor``: CloudWatch over Smithy RPCv2 CBOR (what aws-sdk-rust
                   speaks), bridged to moto's AWS JSON 1.0.
- ``control``:     the WSGI front: ``/_localaws/*`` endpoints, the registry's
                   ``/v2/`` API, moto for the rest.

``install()`` applies every patch once; ``python -m replwatch_localaws`` runs
the server.
"""

from __future__ import annotations

import threading

_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Apply all patches to moto (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from . import (accounts, alarm_actions, backfill, calls, ecr, eventbridge, faults, meter, network, paging,
                      referrers, region_opt_in, registry, replication, load_scale, sns_policy, sqs_policy,
                      storage_class, store, templates, trust)

        store.install_reset_hook()
        accounts.install()
        eventbridge.install()
        ecr.install()
        storage_class.install()  # wraps some of ecr's patches
        referrers.install()
        registry.install()
        replication.install()
        backfill.install()
        templates.install()
        region_opt_in.install()
        trust.install()
        paging.install()
        calls.install()
        load_scale.install()  # before the meter, which wraps its query
        meter.install()
        sqs_policy.install()  # wraps the meter's EventBridge -> SQS delivery: refusals are not billed
        sns_policy.install()
        alarm_actions.install()
        faults.install()
        network.install()
        _installed = True
