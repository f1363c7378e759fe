"""Runs and sets up moto's EC2 server for the ec2 backend's tests.

    python3 moto_setup.py serve --port PORT        # the server, on 127.0.0.1
    python3 moto_setup.py setup --endpoint http://127.0.0.1:PORT

`serve` runs moto's server (auth off) until its stdin closes or its parent
dies, so a test run never leaves it behind. `setup` creates, in us-east-1:

- IAM users with access keys: "poller" (ec2:Describe* only) and "noperm"
  (no policy);
- a VPC with an IPv6 block, two subnets;
- instance "multi": running, its primary ENI with two secondary private
  IPs, an IPv6 address and an Elastic IP, and a second ENI at device index 1;
- instance "stopped" (stopped) and "terminated" (terminated);
- instances "fleet-1" .. "fleet-12", one reservation each (more than one
  page at MaxResults 5);

then POSTs /moto-api/reset-auth with 0, so that from now on every request
must be signed by a valid IAM key and is checked against IAM policies.
It prints, as one JSON object, the keys and the truth read back from moto:
per instance id its label, state name and interfaces (id, mac, subnet,
vpc, device_index, private_ips primary first, ipv6, public_ips).
"""

import argparse
import ctypes
import json
import os
import signal
import sys
import threading
import urllib.request

REGION = "us-east-1"


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
    from moto.server import main as moto_main
    moto_main(["-H", "127.0.0.1", "-p", str(port)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve").add_argument("--port", type=int, required=True)
    commands.add_parser("setup").add_argument("--endpoint", required=True)
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port)
        return

    import boto3

    def client(service, keys=("admin", "admin")):
        return boto3.client(service, region_name=REGION, endpoint_url=args.endpoint,
                            aws_access_key_id=keys[0], aws_secret_access_key=keys[1])

    iam = client("iam")
    users = {}
    for name, policy in [("poller", {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}), ("noperm", None)]:
        iam.create_user(UserName=name)
        if policy:
            iam.put_user_policy(UserName=name, PolicyName="describe",
                                PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [policy]}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        users[name] = {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}

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
        instances[owner]["interfaces"].append({
            "id": eni["NetworkInterfaceId"], "mac": eni.get("MacAddress", ""), "subnet": eni.get("SubnetId", ""),
            "vpc": eni.get("VpcId", ""), "device_index": eni["Attachment"]["DeviceIndex"],
            "private_ips": [item["PrivateIpAddress"] for item in privates],
            "ipv6": [item["Ipv6Address"] for item in eni.get("Ipv6Addresses", [])],
            "public_ips": publics,
        })
    for instance in instances.values():
        instance["interfaces"].sort(key=lambda interface: interface["device_index"])

    # From now on every request must be signed by a valid IAM key.
    request = urllib.request.Request(args.endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request, timeout=10).read()

    print(json.dumps({"region": REGION, "poller": users["poller"], "noperm": users["noperm"], "instances": instances}))


if __name__ == "__main__":
    main()
