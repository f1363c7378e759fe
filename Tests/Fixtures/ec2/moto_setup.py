"""Runs and sets up moto's EC2 server for the ec2 backend's tests.

    python3 moto_setup.py serve --port PORT        # the server, on 127.0.0.1
    python3 moto_setup.py setup --endpoint http://127.0.0.1:PORT
    python3 moto_setup.py control --endpoint http://127.0.0.1:PORT COMMAND [ARG]

`serve` runs moto's server (auth off) until its stdin closes or its parent
dies, so a test run never leaves it behind. In front of moto it serves an
instance metadata service that enforces IMDSv2 (moto's own answers fixed
keys that its IAM auth rejects, and no token is needed):

- PUT /latest/api/token (header X-aws-ec2-metadata-token-ttl-seconds,
  1-21600) issues a token; a /latest/ GET without a valid
  X-aws-ec2-metadata-token header gets 401;
- GET /latest/meta-data/iam/security-credentials/ lists the role
  "poller-instance-role", and .../poller-instance-role returns keys that
  moto's STS backend issues for that role there and then (so moto's auth
  accepts them), expiring after the lifetime the control API sets
  (default 6 hours);
- every metadata request and every STS AssumeRole request is logged on
  stderr as one "fixture: ..." line, so a test can count them;
- /fixture-api/lifetime?seconds=N sets the lifetime of the keys handed out
  next, /fixture-api/mark?name=X logs "fixture: mark X" (a test waits for it
  to know every earlier line has been read).

`setup` creates, in us-east-1:

- IAM users with access keys: "poller" (ec2:Describe* only), "noperm"
  (no policy) and "assumer" (sts:AssumeRole on any role, nothing else);
- role "poller-role" (ec2:Describe*), which "assumer" may assume with the
  external id "instancepoller-test"; role "locked-role" (ec2:Describe*),
  whose trust policy names only "poller", so "assumer" is refused it; role
  "poller-instance-role" (ec2:Describe*) for the instance metadata service;
- a VPC with an IPv6 block, two subnets;
- instance "multi": running, its primary ENI with two secondary private
  IPs, an IPv6 address and an Elastic IP, and a second ENI at device index 1;
- instance "stopped" (stopped) and "terminated" (terminated);
- instances "fleet-1" .. "fleet-12", one reservation each (more than one
  page at MaxResults 5), in the default VPC, with private and public DNS
  names;

then POSTs /moto-api/reset-auth with 0, so that from now on every request
must be signed by a valid IAM key and is checked against IAM policies, and
assumes "poller-role" as "assumer" (keys with a session token, 12 hours).
It prints, as one JSON object, the keys, the roles and the truth read back
from moto: per instance id its label, state name and interfaces (id, mac,
subnet, vpc, device_index, private_ips primary first, ipv6, public_ips,
private_dns and public_dns in the order the backend reports them).

`control` runs one control request: `lifetime SECONDS`, `mark NAME`, or
`imds-probe`: a metadata GET without a token, printing the status (401).
"""

import argparse
import ctypes
import datetime
import io
import json
import os
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

REGION = "us-east-1"


ACCOUNT = "123456789012"
INSTANCE_ROLE = "poller-instance-role"


def log(line):
    sys.stderr.write("fixture: " + line + "\n")
    sys.stderr.flush()


class InstanceMetadata:
    """The WSGI app in front of moto: IMDSv2 with real keys, the control
    API, and a log line per metadata and AssumeRole request."""

    def __init__(self, moto_app):
        self.moto_app = moto_app
        self.lock = threading.Lock()
        self.tokens = {}  # token -> expiry (time.monotonic())
        self.lifetime = 6 * 3600

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/fixture-api/"):
            return self.control(path, environ, start_response)
        if path.startswith("/latest/"):
            return self.metadata(path, environ, start_response)
        if environ.get("REQUEST_METHOD") == "POST":
            action = self.action(environ)
            if action == "AssumeRole":
                def logging_start_response(status, headers, exc_info=None):
                    log(f"AssumeRole {status.split()[0]}")
                    return start_response(status, headers, exc_info)
                return self.moto_app(environ, logging_start_response)
        return self.moto_app(environ, start_response)

    @staticmethod
    def action(environ):
        """The form body's Action (the body is put back for moto)."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if not length or not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            return None
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        return urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action", [None])[0]

    @staticmethod
    def answer(start_response, status, body, content_type="text/plain"):
        data = body.encode("utf-8")
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data)))])
        return [data]

    def metadata(self, path, environ, start_response):
        method = environ.get("REQUEST_METHOD")
        if path == "/latest/api/token":
            ttl = environ.get("HTTP_X_AWS_EC2_METADATA_TOKEN_TTL_SECONDS", "")
            if method != "PUT":
                log(f"imds {method} {path} 405")
                return self.answer(start_response, "405 Method Not Allowed", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                log(f"imds PUT {path} 400 (ttl {ttl!r})")
                return self.answer(start_response, "400 Bad Request", "")
            token = secrets.token_urlsafe(32)
            with self.lock:
                self.tokens[token] = time.monotonic() + int(ttl)
            log(f"imds PUT {path} 200 (ttl {ttl})")
            return self.answer(start_response, "200 OK", token)
        token = environ.get("HTTP_X_AWS_EC2_METADATA_TOKEN", "")
        with self.lock:
            valid = self.tokens.get(token, 0) > time.monotonic()
        if not valid:
            log(f"imds {method} {path} 401 (no valid token)")
            return self.answer(start_response, "401 Unauthorized", "")
        prefix = "/latest/meta-data/iam/security-credentials/"
        if method == "GET" and path == prefix:
            log(f"imds GET {path} 200")
            return self.answer(start_response, "200 OK", INSTANCE_ROLE)
        if method == "GET" and path == prefix + INSTANCE_ROLE:
            from moto.sts.models import sts_backends
            with self.lock:
                lifetime = self.lifetime
            role = sts_backends[ACCOUNT]["aws"].assume_role(
                region_name="us-east-1", role_session_name="i-fixture",
                role_arn=f"arn:aws:iam::{ACCOUNT}:role/{INSTANCE_ROLE}", policy=None, duration=lifetime, external_id=None)
            now = datetime.datetime.now(datetime.timezone.utc)
            keys = {
                "Code": "Success", "LastUpdated": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "Type": "AWS-HMAC",
                "AccessKeyId": role.access_key_id, "SecretAccessKey": role.secret_access_key, "Token": role.session_token,
                "Expiration": (now + datetime.timedelta(seconds=lifetime)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            log(f"imds GET {path} 200 (keys for {lifetime} s)")
            return self.answer(start_response, "200 OK", json.dumps(keys), "application/json")
        log(f"imds {method} {path} 404")
        return self.answer(start_response, "404 Not Found", "")

    def control(self, path, environ, start_response):
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        if path == "/fixture-api/lifetime":
            with self.lock:
                self.lifetime = int(query["seconds"][0])
            log(f"lifetime {self.lifetime}")
            return self.answer(start_response, "200 OK", "ok")
        if path == "/fixture-api/mark":
            log(f"mark {query['name'][0]}")
            return self.answer(start_response, "200 OK", "ok")
        return self.answer(start_response, "404 Not Found", "")


def serve(port):
    # Whatever the parent blocked, this process answers signals, and it goes
    # when the test process goes: stdin EOF, or the parent-death signal.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def watch_stdin():
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    # As moto's own server main does, with the metadata service in front.
    os.environ.setdefault("MOTO_PORT", str(port))
    from werkzeug.serving import run_simple
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    run_simple("127.0.0.1", port, InstanceMetadata(app), threaded=True)


def control(endpoint, command, argument):
    if command == "lifetime":
        url = f"{endpoint}/fixture-api/lifetime?seconds={int(argument)}"
    elif command == "mark":
        url = f"{endpoint}/fixture-api/mark?name={urllib.parse.quote(argument)}"
    elif command == "imds-probe":
        # A metadata GET without a token, as a client that skips IMDSv2 sends it.
        try:
            urllib.request.urlopen(f"{endpoint}/latest/meta-data/iam/security-credentials/", timeout=10)
            print(200)
        except urllib.error.HTTPError as error:
            print(error.code)
        return
    else:
        sys.exit(f"moto_setup.py control: unknown command {command!r}")
    print(urllib.request.urlopen(url, timeout=10).read().decode())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve").add_argument("--port", type=int, required=True)
    commands.add_parser("setup").add_argument("--endpoint", required=True)
    control_parser = commands.add_parser("control")
    control_parser.add_argument("--endpoint", required=True)
    control_parser.add_argument("action")
    control_parser.add_argument("argument", nargs="?")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port)
        return
    if args.command == "control":
        control(args.endpoint, args.action, args.argument)
        return

    import boto3

    def client(service, keys=("admin", "admin")):
        return boto3.client(service, region_name=REGION, endpoint_url=args.endpoint,
                            aws_access_key_id=keys[0], aws_secret_access_key=keys[1])

    iam = client("iam")
    users = {}
    describe = {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}
    for name, policy in [("poller", describe), ("noperm", None),
                         ("assumer", {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"})]:
        iam.create_user(UserName=name)
        if policy:
            iam.put_user_policy(UserName=name, PolicyName="policy",
                                PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [policy]}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        users[name] = {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}

    external_id = "instancepoller-test"
    roles = {}
    for name, trust in [
        ("poller-role", {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/assumer"},
                         "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:ExternalId": external_id}}}),
        ("locked-role", {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/poller"},
                         "Action": "sts:AssumeRole"}),
        (INSTANCE_ROLE, {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}),
    ]:
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [trust]}))["Role"]
        iam.put_role_policy(RoleName=name, PolicyName="describe",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [describe]}))
        roles[name] = role["Arn"]

    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16", AmazonProvidedIpv6CidrBlock=True)["Vpc"]
    vpc_v6 = ec2.describe_vpcs(VpcIds=[vpc["VpcId"]])["Vpcs"][0].get("Ipv6CidrBlockAssociationSet", [])
    subnet_args = {}
    if vpc_v6:
        prefix = vpc_v6[0]["Ipv6CidrBlock"].split("/")[0].rstrip(":")
        subnet_args = {"Ipv6CidrBlock": prefix + "::/64"} if prefix.count(":") < 4 else {}
    subnet1 = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.20.1.0/24", **subnet_args)["Subnet"]
    subnet2 = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.20.2.0/24")["Subnet"]
    image = "ami-12c6146b"

    def run(label, **extra):
        reservation = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                        TagSpecifications=[{"ResourceType": "instance",
                                                            "Tags": [{"Key": "Name", "Value": label}]}], **extra)
        return reservation["Instances"][0]["InstanceId"]

    labels = {}
    multi = run("multi", NetworkInterfaces=[{
        "DeviceIndex": 0, "SubnetId": subnet1["SubnetId"], "PrivateIpAddress": "10.20.1.10",
        "SecondaryPrivateIpAddressCount": 2}])
    labels[multi] = "multi"
    primary_eni = ec2.describe_instances(InstanceIds=[multi])["Reservations"][0]["Instances"][0]["NetworkInterfaces"][0]
    ec2.assign_private_ip_addresses(NetworkInterfaceId=primary_eni["NetworkInterfaceId"],
                                    PrivateIpAddresses=["10.20.1.11", "10.20.1.12"])
    if subnet_args:
        try:
            ec2.assign_ipv6_addresses(NetworkInterfaceId=primary_eni["NetworkInterfaceId"], Ipv6AddressCount=1)
        except Exception:  # noqa: BLE001 - an older moto without IPv6 on ENIs: the truth says what is there
            pass
    eip = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=eip["AllocationId"], NetworkInterfaceId=primary_eni["NetworkInterfaceId"],
                          PrivateIpAddress="10.20.1.10")
    second = ec2.create_network_interface(SubnetId=subnet2["SubnetId"], PrivateIpAddress="10.20.2.10")["NetworkInterface"]
    ec2.attach_network_interface(NetworkInterfaceId=second["NetworkInterfaceId"], InstanceId=multi, DeviceIndex=1)

    stopped = run("stopped")
    ec2.stop_instances(InstanceIds=[stopped])
    labels[stopped] = "stopped"
    terminated = run("terminated")
    ec2.terminate_instances(InstanceIds=[terminated])
    labels[terminated] = "terminated"
    for index in range(1, 13):
        labels[run(f"fleet-{index}")] = f"fleet-{index}"

    # The truth, as moto reports it.
    instances = {}
    for reservation in ec2.describe_instances(InstanceIds=list(labels))["Reservations"]:
        for instance in reservation["Instances"]:
            instances[instance["InstanceId"]] = {"label": labels[instance["InstanceId"]],
                                                 "state": instance["State"]["Name"], "interfaces": []}
    enis = ec2.describe_network_interfaces(Filters=[{"Name": "attachment.instance-id", "Values": list(labels)}])
    for eni in enis["NetworkInterfaces"]:
        owner = eni.get("Attachment", {}).get("InstanceId")
        if owner not in instances:
            continue
        privates = sorted(eni.get("PrivateIpAddresses", []), key=lambda item: not item.get("Primary", False))
        publics = []
        for item in privates:
            public = item.get("Association", {}).get("PublicIp")
            if public and public not in publics:
                publics.append(public)
        public = eni.get("Association", {}).get("PublicIp")
        if public and public not in publics:
            publics.append(public)
        # DNS names: each private IP's, then the ENI's; each public IP's.
        private_dns = []
        for name in [item.get("PrivateDnsName") for item in privates] + [eni.get("PrivateDnsName")]:
            if name and name not in private_dns:
                private_dns.append(name)
        public_dns = []
        for name in [item.get("Association", {}).get("PublicDnsName") for item in privates] + \
                [eni.get("Association", {}).get("PublicDnsName")]:
            if name and name not in public_dns:
                public_dns.append(name)
        instances[owner]["interfaces"].append({
            "id": eni["NetworkInterfaceId"], "mac": eni.get("MacAddress", ""), "subnet": eni.get("SubnetId", ""),
            "vpc": eni.get("VpcId", ""), "device_index": eni["Attachment"]["DeviceIndex"],
            "private_ips": [item["PrivateIpAddress"] for item in privates],
            "ipv6": [item["Ipv6Address"] for item in eni.get("Ipv6Addresses", [])],
            "public_ips": publics,
            "private_dns": private_dns,
            "public_dns": public_dns,
        })
    for instance in instances.values():
        instance["interfaces"].sort(key=lambda interface: interface["device_index"])

    # From now on every request must be signed by a valid IAM key.
    request = urllib.request.Request(args.endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request, timeout=10).read()

    # Keys with a session token, as STS hands them out (moto's
    # GetSessionToken answers fixed keys that its own auth rejects).
    sts = client("sts", (users["assumer"]["access_key"], users["assumer"]["secret_key"]))
    assumed = sts.assume_role(RoleArn=roles["poller-role"], RoleSessionName="session-token-test",
                              ExternalId=external_id, DurationSeconds=43200)["Credentials"]
    session = {"access_key": assumed["AccessKeyId"], "secret_key": assumed["SecretAccessKey"],
               "session_token": assumed["SessionToken"]}

    print(json.dumps({"region": REGION, "poller": users["poller"], "noperm": users["noperm"],
                      "assumer": users["assumer"], "session": session, "external_id": external_id,
                      "role_arn": roles["poller-role"], "locked_role_arn": roles["locked-role"],
                      "instance_role": INSTANCE_ROLE, "instances": instances}))


if __name__ == "__main__":
    main()
