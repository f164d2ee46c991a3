"""boto3 against kilnd's EC2 endpoint (TestEC2Boto3).

Run with Debian's python3 and python3-boto3; the environment gives the endpoint, the region,
the caller's access key and the image. AWS_DATA_PATH points at the aws CLI's newer copy of
EC2's model, which has DescribeImages' MaxResults (python3-botocore 1.29's has not).
Each check prints one line "ok: ..." or raises; the Go test reads them.
"""
import os
import sys
import time
import urllib.error
import urllib.request

import boto3
import botocore.exceptions

endpoint = os.environ["KILN_EC2_ENDPOINT"]
image_id = os.environ["KILN_IMAGE_ID"]
copies = int(os.environ["KILN_COPIES"])

session = boto3.session.Session(region_name=os.environ["AWS_DEFAULT_REGION"])
client = session.client("ec2", endpoint_url=endpoint)
ec2 = session.resource("ec2", endpoint_url=endpoint)

# Pages through describe_images with MaxResults: every image once, none twice.
seen, pages, token = [], 0, None
while True:
    kw = {"Owners": ["self"], "MaxResults": 5}
    if token:
        kw["NextToken"] = token
    resp = client.describe_images(**kw)
    pages += 1
    seen += [im["ImageId"] for im in resp["Images"]]
    token = resp.get("NextToken")
    if not token:
        break
assert len(seen) == len(set(seen)) == copies + 1, (seen, copies)
assert pages == (copies + 1 + 4) // 5, pages
print("ok: describe_images paged %d images in %d pages" % (len(seen), pages))

# The paginator does the same.
paged = [im["ImageId"] for p in client.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 5}) for r in p["Reservations"] for im in r["Instances"]]
print("ok: describe_instances paginator saw %d instances" % len(paged))

# ClientToken: the same token twice gives one instance.
token = "boto3-idempotent-%d" % os.getpid()
first = client.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="small", ClientToken=token)
second = client.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="small", ClientToken=token)
iid = first["Instances"][0]["InstanceId"]
assert second["Instances"][0]["InstanceId"] == iid, (first, second)
mine = [i for r in client.describe_instances()["Reservations"] for i in r["Instances"] if i["State"]["Name"] != "terminated"]
assert len(mine) == 1, mine
try:
    client.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="medium", ClientToken=token)
    raise AssertionError("the same token with other parameters launched")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "IdempotentParameterMismatch", e.response
print("ok: ClientToken %s gave one instance, %s" % (token, iid))

# Resource objects and their waiters.
inst = ec2.Instance(iid)
inst.wait_until_running(WaiterConfig={"Delay": 2, "MaxAttempts": 60})
inst.reload()
assert inst.state["Name"] == "running", inst.state
assert inst.image_id == image_id
print("ok: ec2.Instance(%s).wait_until_running: %s" % (iid, inst.state["Name"]))
inst.create_tags(Tags=[{"Key": "made-by", "Value": "boto3"}])
found = list(ec2.instances.filter(Filters=[{"Name": "tag:made-by", "Values": ["boto3"]}]))
assert [i.id for i in found] == [iid], found
print("ok: tag filter found %s" % iid)
# The guest's checks pass once it is up (and then it shuts down at once when asked).
client.get_waiter("instance_status_ok").wait(InstanceIds=[iid], WaiterConfig={"Delay": 2, "MaxAttempts": 90})
print("ok: instance_status_ok waiter for %s" % iid)
inst.terminate()
inst.wait_until_terminated(WaiterConfig={"Delay": 2, "MaxAttempts": 60})
print("ok: terminated %s" % iid)

# Presigned requests: one works; expired and tampered ones are refused.
# Signed for GET, the method it is sent with (botocore signs EC2's as POST otherwise).
url = client.generate_presigned_url("describe_regions", ExpiresIn=60, HttpMethod="GET")
with urllib.request.urlopen(url, timeout=30) as r:
    body = r.read().decode()
assert "DescribeRegionsResponse" in body and os.environ["AWS_DEFAULT_REGION"] in body, body
print("ok: a presigned request worked")


def refused(url):
    try:
        urllib.request.urlopen(url, timeout=30)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    raise AssertionError("accepted: " + url)


code, body = refused(url.replace("Action=DescribeRegions", "Action=DescribeImages"))
assert code in (401, 403) and ("AuthFailure" in body or "SignatureDoesNotMatch" in body), (code, body)
print("ok: a tampered presigned request was refused (%d)" % code)
short = client.generate_presigned_url("describe_regions", ExpiresIn=1, HttpMethod="GET")
time.sleep(2)
code, body = refused(short)
assert "RequestExpired" in body, (code, body)
print("ok: an expired presigned request was refused (%d)" % code)
sys.exit(0)
