"""Create or update the smartcity stack from deploy/aws/smartcity.yaml through a change set.

    .venv/bin/python -m deploy.aws.deploy --stack-name smartcity-dev                 # review only
    .venv/bin/python -m deploy.aws.deploy --stack-name smartcity-dev --execute       # and apply
    .venv/bin/python -m deploy.aws.deploy --stack-name smartcity-prod --region eu-west-1 \\
        --parameter Environment=prod --parameter BytesScannedCutoffPerQuery=107374182400

A change set of type CREATE (no stack of that name yet, or one whose only change set was never
executed) or UPDATE; the command waits for it, prints every change (Add, Modify with whether it
replaces the resource, Remove) and executes it only with --execute, then follows the stack's
events to the end and prints its outputs. Without --execute the change set stays for review
(console, or `aws cloudformation describe-change-set`); nothing has changed.

On an UPDATE a parameter not given keeps the stack's current value (UsePreviousValue), never the
template's default: a default silently taking over would rename the buckets. The template needs
CAPABILITY_IAM (it creates IAM roles and policies, none with a fixed name). A template over
CloudFormation's 51,200 bytes for an inline body goes through S3: --template-bucket.

Credentials and region come from the AWS default chain (AWS_PROFILE, AWS_DEFAULT_REGION, SSO, instance
role), never from a flag or a file here. --endpoint-url points the clients elsewhere (the tests:
moto's server on loopback). Exit status: 0 done (or nothing to change), 1 the change set or the
stack operation failed, 2 a usage mistake.
"""
from __future__ import annotations

import hashlib
import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml

from smartcity.runtime.cli import ArgumentParser, UsageError, cli

log = logging.getLogger(__name__)

PROG = "python -m deploy.aws.deploy"
TEMPLATE = Path(__file__).with_name("smartcity.yaml")
CAPABILITIES = ["CAPABILITY_IAM"]
BODY_MAX_BYTES = 51_200          # CloudFormation's limit for TemplateBody; TemplateURL: 1 MB
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
# A stack in one of these has no template to update (its creation failed and rolled back).
DEAD = {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED", "DELETE_COMPLETE"}


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, ...) read as plain values: only the
    Parameters section is needed here, the tags' meaning is CloudFormation's business."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def template_parameters(body: str) -> list[str]:
    doc = yaml.load(body, Loader=_CfnLoader) or {}
    return list((doc.get("Parameters") or {}).keys())


def parse_parameters(items: list[str], known: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UsageError(f"--parameter {item!r}: expected KEY=VALUE")
        if k not in known:
            raise UsageError(f"--parameter {k}: the template has no such parameter; it has {', '.join(known)}")
        out[k] = v
    return out


def existing_stack(cfn, name: str) -> dict | None:
    """The stack of that name, or None when there is none (or only a deleted one)."""
    from botocore.exceptions import ClientError
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as e:
        if "does not exist" in str(e):
            return None
        raise
    live = [s for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"]
    return live[0] if live else None


def change_set_type(stack: dict | None, name: str) -> str:
    if stack is None or stack["StackStatus"] == "REVIEW_IN_PROGRESS":
        return "CREATE"
    status = stack["StackStatus"]
    if status in DEAD:
        raise UsageError(f"stack {name} is {status}: its creation failed, so it cannot be updated; "
                         f"delete it (aws cloudformation delete-stack --stack-name {name}; the buckets "
                         "and the Glue database are retained and must be empty and deleted by hand, "
                         "or the new stack cannot create them) and run this again")
    if status.endswith("_IN_PROGRESS"):
        raise UsageError(f"stack {name} is {status}: wait until it is done and run this again")
    return "UPDATE"


def stack_parameters(known: list[str], given: dict[str, str], stack: dict | None,
                     kind: str) -> list[dict[str, Any]]:
    """Given values; on an UPDATE every other parameter the stack has keeps its value."""
    previous = {p["ParameterKey"] for p in (stack or {}).get("Parameters", [])} if kind == "UPDATE" else set()
    out = []
    for k in known:
        if k in given:
            out.append({"ParameterKey": k, "ParameterValue": given[k]})
        elif k in previous:
            out.append({"ParameterKey": k, "UsePreviousValue": True})
    return out


def upload_template(s3, bucket: str, stack_name: str, body: str, region: str) -> str:
    """Put the template at s3://bucket/cloudformation/{stack}/{sha256 prefix}.yaml and return its
    https URL (virtual-hosted, in `region`: the bucket must be in the stack's region)."""
    key = f"cloudformation/{stack_name}/{hashlib.sha256(body.encode()).hexdigest()[:16]}.yaml"
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType="application/x-yaml")
    return f"https://{bucket}.s3.{region}.amazonaws.com/{key}"


@dataclass
class ChangeSet:
    arn: str
    stack_id: str
    name: str
    kind: str
    status: str
    reason: str
    changes: list[dict]

    @property
    def empty(self) -> bool:
        return self.status == "FAILED" and any(s in self.reason for s in NO_CHANGES)


def wait_change_set(cfn, arn: str, poll_s: float, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        d = cfn.describe_change_set(ChangeSetName=arn)
        if d["Status"] in ("CREATE_COMPLETE", "FAILED"):
            return d
        if time.monotonic() > deadline:
            raise TimeoutError(f"change set {arn} still {d['Status']} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def all_changes(cfn, arn: str, first: dict) -> list[dict]:
    changes, d = list(first.get("Changes", [])), first
    while d.get("NextToken"):
        d = cfn.describe_change_set(ChangeSetName=arn, NextToken=d["NextToken"])
        changes += d.get("Changes", [])
    return changes


def create_change_set(cfn, stack_name: str, kind: str, template: dict[str, str],
                      parameters: list[dict], poll_s: float, timeout_s: float) -> ChangeSet:
    from botocore.exceptions import ClientError
    name = "smartcity-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    try:
        r = cfn.create_change_set(StackName=stack_name, ChangeSetName=name, ChangeSetType=kind,
                                  Parameters=parameters, Capabilities=CAPABILITIES,
                                  Description="python -m deploy.aws.deploy", **template)
    except ClientError as e:
        if any(s in str(e) for s in NO_CHANGES):   # moto says so here; AWS in a FAILED change set
            return ChangeSet("", "", name, kind, "FAILED", str(e), [])
        raise
    log.info("change set created", extra={"stack": stack_name, "change_set": name, "kind": kind})
    d = wait_change_set(cfn, r["Id"], poll_s, timeout_s)
    return ChangeSet(r["Id"], r["StackId"], name, kind, d["Status"], d.get("StatusReason", ""),
                     all_changes(cfn, r["Id"], d) if d["Status"] == "CREATE_COMPLETE" else [])


def describe_change(c: dict) -> str:
    rc = c.get("ResourceChange", {})
    action = rc.get("Action", "?")
    line = f"  {action:<8} {rc.get('ResourceType', '?'):<28} {rc.get('LogicalResourceId', '?')}"
    if action == "Modify":
        repl = rc.get("Replacement", "")
        scope = ",".join(rc.get("Scope", []))
        line += f"  ({scope or 'no scope'}; " + ("REPLACES the resource" if repl == "True" else
                                                  "may replace the resource" if repl == "Conditional" else
                                                  "in place") + ")"
    return line


def stack_event_ids(cfn, stack_id: str) -> set[str]:
    return {e["EventId"] for e in cfn.describe_stack_events(StackName=stack_id).get("StackEvents", [])}


def follow_stack(cfn, stack_id: str, poll_s: float, timeout_s: float,
                 on_event: Callable[[dict], None], seen: set[str] | None = None) -> dict:
    """Poll until the stack is no longer *_IN_PROGRESS, passing each new event to on_event
    (oldest first); the stack's description at the end. By id, not name: the stack the change
    set belongs to, whatever else has that name. Events in `seen` (the history before) are skipped."""
    seen = set() if seen is None else set(seen)
    deadline = time.monotonic() + timeout_s
    while True:
        events = cfn.describe_stack_events(StackName=stack_id).get("StackEvents", [])
        for e in reversed(events):
            if e["EventId"] not in seen:
                seen.add(e["EventId"])
                on_event(e)
        stack = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS"):
            return stack
        if time.monotonic() > deadline:
            raise TimeoutError(f"stack {stack_id} still {stack['StackStatus']} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _event_line(e: dict) -> str:
    reason = e.get("ResourceStatusReason") or ""
    return (f"  {e.get('ResourceStatus', '?'):<22} {e.get('ResourceType', '?'):<28} "
            f"{e.get('LogicalResourceId', '?')}" + (f"  {reason}" if reason else ""))


def clients(region: str | None, endpoint_url: str | None):
    import boto3
    session = boto3.session.Session(region_name=region)
    if not session.region_name:
        raise UsageError("no AWS region: pass --region or set AWS_DEFAULT_REGION (or a profile's region)")
    return (session.client("cloudformation", endpoint_url=endpoint_url),
            session.client("s3", endpoint_url=endpoint_url), session.region_name)


@cli(PROG)
def main(argv: list[str] | None = None) -> int:
    from botocore.exceptions import ClientError, NoCredentialsError
    try:
        return _main(argv)
    except NoCredentialsError:
        raise UsageError("no AWS credentials: set AWS_PROFILE (or log in with aws sso login), "
                         "or run where an instance role provides them") from None
    except (ClientError, TimeoutError) as e:   # refused by AWS (access, validation, a name taken)
        print(f"{PROG}: {e}", file=sys.stderr)     # or still running at --timeout-s: its words
        return 1


def _main(argv: list[str] | None) -> int:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--stack-name", required=True)
    p.add_argument("--region", help="default: the AWS chain's (AWS_DEFAULT_REGION, the profile's)")
    p.add_argument("--endpoint-url", help="CloudFormation and S3 at this URL instead of AWS's (tests: moto)")
    p.add_argument("--template", type=Path, default=TEMPLATE, help="default: deploy/aws/smartcity.yaml")
    p.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE",
                   help="a template parameter (repeatable); on an update the others keep their values")
    p.add_argument("--template-bucket", help="upload the template to this bucket (in the same region) "
                                             "and pass its URL (needed over 51,200 bytes)")
    p.add_argument("--execute", action="store_true", help="execute the change set after printing it")
    p.add_argument("--poll-s", type=float, default=5.0, help="seconds between status checks (default 5)")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="give up waiting after this (default 3600)")
    a = p.parse_args(argv)
    try:
        body = a.template.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"--template {a.template}: cannot read it: {e.strerror or e}") from None
    known = template_parameters(body)
    given = parse_parameters(a.parameter, known)
    cfn, s3, region = clients(a.region, a.endpoint_url)

    if a.template_bucket:
        template = {"TemplateURL": upload_template(s3, a.template_bucket, a.stack_name, body, region)}
    elif len(body.encode()) > BODY_MAX_BYTES:
        raise UsageError(f"{a.template} is {len(body.encode())} bytes, over CloudFormation's "
                         f"{BODY_MAX_BYTES} for a template body: pass --template-bucket BUCKET")
    else:
        template = {"TemplateBody": body}

    stack = existing_stack(cfn, a.stack_name)
    kind = change_set_type(stack, a.stack_name)
    cs = create_change_set(cfn, a.stack_name, kind, template,
                           stack_parameters(known, given, stack, kind), a.poll_s, a.timeout_s)
    if cs.empty:
        print(f"stack {a.stack_name}: no changes ({cs.reason})")
        if cs.arn:
            cfn.delete_change_set(ChangeSetName=cs.arn)
        return 0
    if cs.status != "CREATE_COMPLETE":
        print(f"change set {cs.name} for stack {a.stack_name} failed: {cs.reason}", file=sys.stderr)
        return 1
    print(f"change set {cs.name} ({cs.kind}) for stack {a.stack_name} in {region}: "
          f"{len(cs.changes)} change(s)")
    for c in cs.changes:
        print(describe_change(c))
    if not a.execute:
        print(f"not executed (no --execute): review it, then run again with --execute, or\n"
              f"  aws cloudformation execute-change-set --change-set-name {cs.arn}")
        return 0

    before = stack_event_ids(cfn, cs.stack_id)
    cfn.execute_change_set(ChangeSetName=cs.arn)
    print(f"executing {cs.name} ...")
    final = follow_stack(cfn, cs.stack_id, a.poll_s, a.timeout_s, lambda e: print(_event_line(e)), before)
    status = final["StackStatus"]
    print(f"stack {a.stack_name}: {status}")
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        return 1
    for o in sorted(final.get("Outputs", []), key=lambda o: o["OutputKey"]):
        print(f"  {o['OutputKey']} = {o['OutputValue']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
