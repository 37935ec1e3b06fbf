"""Two hosts for real: two network namespaces joined by a veth pair, each with its own address,
each running its node's launcher (launch/torchrun.sh = torchrun --nnodes 2 with a c10d rendezvous
on the first namespace's address), one rank per host. The losses equal a 2-rank single-host run.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import launchtools as S
import pytest

pytestmark = pytest.mark.netns




IFACE = "llm0"  # same name inside both namespaces, so one GLOO_SOCKET_IFNAME fits both hosts
SUBNET = "10.231.77"


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def two_hosts():
    """Namespaces A (SUBNET.1) and B (SUBNET.2) joined by a veth pair; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    reason = S.apt_install(["iproute2"], ["ip"])
    if reason:
        pytest.skip(f"iproute2 unavailable: {reason}")
    tag = str(os.getpid() % 100000)
    hosts = [f"llmt-a{tag}", f"llmt-b{tag}"]
    veth = [f"lla{tag}", f"llb{tag}"]
    made: list[str] = []
    try:
        for ns in hosts:
            p = _ip("netns", "add", ns)
            if p.returncode:
                pytest.skip(f"cannot create a network namespace: {p.stderr.strip()}")
            made.append(ns)
        steps = [("link", "add", veth[0], "type", "veth", "peer", "name", veth[1])]
        for i, (ns, dev) in enumerate(zip(hosts, veth, strict=True)):
            steps += [("link", "set", dev, "netns", ns),
                      ("-n", ns, "link", "set", dev, "name", IFACE),
                      ("-n", ns, "addr", "add", f"{SUBNET}.{i + 1}/24", "dev", IFACE),
                      ("-n", ns, "link", "set", IFACE, "up"),
                      ("-n", ns, "link", "set", "lo", "up")]
        for step in steps:
            p = _ip(*step)
            if p.returncode:
                pytest.skip(f"cannot wire the namespaces (ip {' '.join(step)}): {p.stderr.strip()}")
        ping = subprocess.run(["ip", "netns", "exec", hosts[1], "ping", "-c1", "-W2", f"{SUBNET}.1"],
                              capture_output=True, text=True, timeout=30) if shutil.which("ping") else None
        if ping is not None and ping.returncode:
            pytest.skip(f"namespaces made but not connected: {ping.stdout.strip()} {ping.stderr.strip()}")
        yield hosts
    finally:
        for ns in made:
            _ip("netns", "del", ns)


def test_two_namespaces_one_rank_each_match_single_host(two_hosts, tmp_path_factory, tmp_path):
    base = tmp_path_factory.getbasetemp()
    data = S.session_data(base / "launch-data")
    reference = S.reference_losses(data, base / "launch-runs")
    port = "29517"
    procs = []
    for i, ns in enumerate(two_hosts):
        env = S.clean_env(NNODES="2", NPROC_PER_NODE="1", MASTER_ADDR=f"{SUBNET}.1", MASTER_PORT=port,
                          RDZV_ID=f"netns-{os.getpid()}", LOCAL_ADDR=f"{SUBNET}.{i + 1}",
                          GLOO_SOCKET_IFNAME=IFACE, PYTHON=S.PYTHON)
        cmd = ["ip", "netns", "exec", ns, "bash", "launch/torchrun.sh", "-m", "llmtrain",
               *S.train_args(data, tmp_path, "two-hosts")]
        procs.append(subprocess.Popen(cmd, cwd=S.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-6000:]
    assert S.read_losses(tmp_path / "two-hosts") == reference
