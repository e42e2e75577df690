"""How Cockpit finds the container or pod it runs in, so no command acts on it."""

from __future__ import annotations

from pathlib import Path

from cockpit.c2l.runtimes.docker_runtime import own_container_id
from cockpit.c2l.runtimes.k8s_runtime import own_pod

ID = "3f4e" * 16


def test_container_id_from_the_engines_bind_mounts(tmp_path: Path) -> None:
    # cgroup v2 with its own namespace: /proc/self/cgroup says only "0::/".
    (tmp_path / "cgroup").write_text("0::/\n")
    (tmp_path / "mountinfo").write_text(
        "612 590 0:52 / / rw,relatime master:1 - overlay overlay rw\n"
        f"640 612 8:1 /var/lib/docker/containers/{ID}/resolv.conf /etc/resolv.conf rw - ext4 /dev/sda1 rw\n"
        f"641 612 8:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n")
    assert own_container_id(tmp_path) == ID


def test_container_id_from_a_cgroup_v1_path_and_none_outside_a_container(tmp_path: Path) -> None:
    (tmp_path / "mountinfo").write_text("22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n")
    (tmp_path / "cgroup").write_text(f"12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n")
    assert own_container_id(tmp_path) == ID
    (tmp_path / "cgroup").write_text("0::/user.slice/user-0.slice/session-1.scope\n")
    assert own_container_id(tmp_path) is None
    assert own_container_id(tmp_path / "missing") is None


def test_pod_from_the_downward_api_or_the_service_account(tmp_path: Path) -> None:
    namespace_file = tmp_path / "namespace"
    assert own_pod({"POD_NAMESPACE": "ops", "POD_NAME": "cockpit-0"}, namespace_file) == ("ops", "cockpit-0")
    assert own_pod({}, namespace_file) is None  # not in a cluster
    namespace_file.write_text("agents\n")
    in_cluster = own_pod({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, namespace_file)
    assert in_cluster is not None and in_cluster[0] == "agents" and in_cluster[1]  # the hostname
    assert own_pod({"POD_NAME": "cockpit-1"}, namespace_file) == ("agents", "cockpit-1")
