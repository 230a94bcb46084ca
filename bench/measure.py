"""One measured run for the bench/ scripts: python3 bench/measure.py LABEL IMAGE CMD...

Runs CMD (after a sync, so it does not queue behind the previous run's writeback), prints one
line: wall seconds, CPU seconds (user+sys of all children), peak RSS, and for an OCI layout
IMAGE (or - for none) the image size (sum of the manifest's compressed layer blobs, base
included). Appends {"label", "wall", "cpu", "rss_mib", "image_mib"} to the JSON-lines file
$RESULTS.
"""
import json
import os
import resource
import subprocess
import sys
import time

label, image, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
os.sync()
t = time.monotonic()
r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.monotonic() - t
if r.returncode:
    sys.exit(f"{label} failed:\n{r.stderr.decode()}")
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = ru.ru_utime + ru.ru_stime
rss = ru.ru_maxrss / 1024
size, image_mib = "", None
if image != "-":
    index = json.load(open(os.path.join(image, "index.json")))
    blob = lambda d: os.path.join(image, "blobs", *d.split(":"))
    m = json.load(open(blob(index["manifests"][0]["digest"])))
    image_mib = sum(l["size"] for l in m["layers"]) / 2**20
    size = f"   image {image_mib:7.1f} MiB in {len(m['layers'])} layers"
print(f"{label:38} wall {wall:6.2f} s   cpu {cpu:6.2f} s   peak RSS {rss:6.1f} MiB{size}", flush=True)
with open(os.environ["RESULTS"], "a") as out:
    out.write(json.dumps({"label": label, "wall": wall, "cpu": cpu, "rss_mib": rss, "image_mib": image_mib}) + "\n")
