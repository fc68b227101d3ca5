"""Ray start-up for every pipeline: the cluster named by RAY_ADDRESS, or an embedded local Ray.

Its own module, below the layers: data conversion (dfei.data.csv_converter), training, sweeps and
batch inference all start Ray through `init_ray`.
"""
from __future__ import annotations

import os


def init_ray(log=print) -> str:
    """Connect to the cluster named by RAY_ADDRESS (ray job submit sets it) or start an embedded Ray."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phone-home from closed networks
    import ray

    if ray.is_initialized():
        return "existing"
    # Ray Train's controller polls its workers every 2 s by default, so every run ended up to 2 s
    # after its last step; 0.5 s costs nothing measurable (inherited by an embedded Ray's processes;
    # on a cluster set it in the job's runtime_env, see cluster/runtime_env.yaml)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        log(f"[ray] connected to cluster at {os.environ['RAY_ADDRESS']}")
        return "cluster"
    # one machine has no node to be preempted: Ray Train's preemption watcher (an actor with
    # max_restarts=-1) would only add an `E ... PreemptionWatcher ... max_restarts > 0` line to the log
    # of every run when it is killed at the end (RAY_TRAIN_ENABLE_PREEMPTION_WATCHER, Ray 2.60)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # the dashboard also serves the state API that Ray Train's controller polls
    # address="local": a new Ray of this process's own, never a cluster some `ray start` on this machine
    # left in /tmp/ray/ray_current_cluster (a bare ray.init() would join that one)
    _start_addressed(ray)
    log(f"[ray] started an embedded local Ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs)")
    return "embedded"


def _start_addressed(ray) -> None:
    """ray.init(address="local") whose processes know their own cluster's address.

    Ray Train's PlacementGroupCleaner looks its cluster up without an address (Ray 2.60): with a
    second Ray on the machine (two runs at once, a run beside the test suite) the lookup finds both
    and every run printed a `ConnectionError: Found multiple active Ray instances` traceback. The
    GCS port is chosen here (RAY_GCS_SERVER_PORT, read by Ray's node start-up) so the job's
    runtime_env can give every worker RAY_ADDRESS = this cluster before it starts."""
    from ray.util import get_node_ip_address

    host = get_node_ip_address()
    host = f"[{host}]" if ":" in host else host  # an IPv6 address in host:port form
    given = os.environ.get("RAY_GCS_SERVER_PORT")  # a port the user chose is kept
    for attempt in range(2):  # a free port may be taken between the probe and Ray's bind: one more
        port = int(given) if given else _free_port()
        os.environ["RAY_GCS_SERVER_PORT"] = str(port)
        try:
            ray.init(address="local", object_store_memory=1 << 30, log_to_driver=True,
                     runtime_env={"env_vars": {"RAY_ADDRESS": f"{host}:{port}"}})
            return
        except Exception:
            ray.shutdown()
            if given or attempt == 1:
                raise
        finally:  # a later embedded start in this process picks its own port
            if given is None:
                os.environ.pop("RAY_GCS_SERVER_PORT", None)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]
