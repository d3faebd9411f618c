"""``fxopt fleet FILE --emit k8s``: the fleet as one Kubernetes indexed Job, for teams without Ray.

One pod per unit (a model, or a group of models sharing a weight store): pod ``i`` runs ``fxopt fleet FILE
--index i`` with the same ``--out`` and ``--cache``, which must be a volume every pod mounts (a
ReadWriteMany PersistentVolumeClaim, named by ``--k8s-claim``). The file is JSON, which ``kubectl apply -f``
reads as it reads YAML. The container requests the largest unit's CPUs and memory (an indexed Job has one
pod template).
"""
from __future__ import annotations

import json
import os

from fxopt.tools.fleet.engines import units
from fxopt.tools.fleet.spec import FleetSpec

__all__ = ["job_manifest", "write_job"]

MOUNT = "/fleet"


def job_manifest(spec: FleetSpec, fleet_file: str, out: str, cache: str, image: str, claim: str,
                 name: str = "fxopt-fleet", parallelism: int = 8) -> dict:
    """The indexed Job (a dict) that runs every unit of ``spec`` once. ``fleet_file``, ``out`` and ``cache``
    are paths as the pods see them (under the claim's mount, :data:`MOUNT`)."""
    work = units(spec)
    cpus = max(c for _, _, c, _ in work)
    memory = max(m for _, _, _, m in work)
    resources = {"cpu": f"{cpus:g}", "memory": f"{memory:g}Gi"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "fxopt-fleet"}},
        "spec": {
            "completionMode": "Indexed",
            "completions": len(work),
            "parallelism": max(1, min(parallelism, len(work))),
            "backoffLimitPerIndex": 1,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "fxopt",
                        "image": image,
                        # Kubernetes sets JOB_COMPLETION_INDEX in each pod of an indexed Job
                        "command": ["fxopt", "fleet", fleet_file, "--out", out, "--cache", cache,
                                    "--serial", "--index", "$(JOB_COMPLETION_INDEX)"],
                        "resources": {"requests": resources, "limits": {"memory": resources["memory"]}},
                        "volumeMounts": [{"name": "fleet", "mountPath": MOUNT}],
                    }],
                    "volumes": [{"name": "fleet", "persistentVolumeClaim": {"claimName": claim}}],
                },
            },
        },
    }


def write_job(spec: FleetSpec, path: str, fleet_file: str, out: str, cache: str, image: str, claim: str) -> str:
    """Write :func:`job_manifest` to ``path`` (JSON); returns the path."""
    doc = job_manifest(spec, fleet_file, out, cache, image, claim)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    return path
