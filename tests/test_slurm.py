"""A study computed through a real SLURM cluster (`pgcore compute --cluster slurm`), whose scheduler takes no
client without the cluster's own certificate, and whose rejected job ends the command in one line.

scripts/slurm-local.sh makes this machine a one-node cluster; CI runs it first and sets
PGCORE_REQUIRE_SLURM=1, so there the test fails rather than skips when SLURM is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pgcore import compute
from pgcore.study import Study
from conftest import one_error_line

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HANG = 900  # seconds after which the submission counts as hung (jobs may queue first)
TINY_STUDY = {
    "seeds": [0, 1], "progress": False,
    "data": {"name": "mnist1d", "num_samples": 1000, "val_fraction": 0.1},
    "model": {"name": "mlp", "width": 32, "depth": 2},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.1},
    "prune": {"levels": 2, "rate": 0.2},
    "variants": {"finetune": {"retrain": "finetune"}},
    "cluster": {"walltime": "00:20:00", "cores": 1, "memory": "3GB", "jobs": 2},
}


def _slurm_missing() -> str | None:
    """Why SLURM cannot be used here, or None."""
    if shutil.which("sbatch") is None:
        return "no sbatch found: SLURM is not installed (scripts/slurm-local.sh sets up a one-node cluster)"
    info = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0 or not {"idle", "mix", "alloc"} & set(info.stdout.split()):
        return f"SLURM has no node up (sinfo: {(info.stdout + info.stderr).strip() or 'nothing'})"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    why = _slurm_missing()
    if why and os.environ.get("PGCORE_REQUIRE_SLURM") == "1":
        pytest.fail(f"PGCORE_REQUIRE_SLURM=1 but {why}")
    if why:
        pytest.skip(why)


def _finals(root: Path) -> dict[str, dict]:
    return {str(p.relative_to(root)): json.loads(p.read_text())["final"]
            for p in sorted(root.glob("*-*/seed*/level_*.json"))}


def test_study_through_slurm_equals_local(slurm, tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(TINY_STUDY))
    store = tmp_path / "slurm store"  # a space: the job script quotes every path it holds
    out = subprocess.run([BIN / "pgcore", "compute", config, "--cluster", "slurm", "--store", store, "--figures", "fig1",
                          "--no-progress"], capture_output=True, text=True, timeout=HANG, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "on a slurm cluster" in out.stdout
    # The workers ran as SLURM jobs: their logs are there, one per job.
    logs = list((store / "slurm-logs").glob("pgcore-*.err"))
    assert logs and any("Start worker" in p.read_text() for p in logs)

    local = tmp_path / "local-store"
    study = Study.from_dict(TINY_STUDY, root=local, progress=False)
    for need in study.expand(["fig1"]):
        study.train(need)
    ours, reference = _finals(store), _finals(local)
    assert len(reference) == 2 * (1 + 3 + 3)  # per seed: the dense run, imp and finetune with 3 levels each
    assert ours == reference


def _meets(address: str, cert: tuple[Path, Path] | None = None) -> str:
    """What a TLS client that trusts any server meets at ``address`` (tls://host:port), presenting ``cert`` (a
    certificate and key file) or none: 'refused: ...', or 'heard' once the handshake is through and the scheduler
    waits for a message."""
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(*cert)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                tls.settimeout(3)
                data = tls.recv(1)  # under TLS 1.3 the server judges the client's certificate after the handshake
        except (ssl.SSLError, ConnectionResetError) as e:
            return f"refused: {e}"
        except TimeoutError:
            return "heard"
    return "refused: closed" if data == b"" else "heard"


def _pem_files(security, role: str, where: Path) -> tuple[Path, Path]:
    tls = security.get_tls_config_for_role(role)
    where.mkdir()
    (where / "cert.pem").write_text(tls["cert"])
    (where / "key.pem").write_text(tls["key"])
    return where / "cert.pem", where / "key.pem"


def test_the_scheduler_takes_only_clients_holding_the_clusters_certificate(slurm, tmp_path):
    import psutil
    from distributed import Client
    from distributed.security import Security

    with compute.open_cluster("slurm", params=TINY_STUDY, root=tmp_path / "store", dashboard=None) as c:
        address = c.client.scheduler.address
        host, port = address.removeprefix("tls://").rsplit(":", 1)
        listening = {s.laddr.ip for s in psutil.Process().net_connections(kind="tcp")
                     if s.status == psutil.CONN_LISTEN and s.laddr.port == int(port)}
        assert address.startswith("tls://") and listening == {host}, (address, listening)  # not 0.0.0.0 nor ::
        # A worker started by SLURM holds the certificate and works.
        assert c.client.submit(os.getenv, "SLURM_JOB_ID", pure=False).result(timeout=HANG)
        ours = _pem_files(c.client.cluster.security, "client", tmp_path / "ours")
        assert _meets(address, ours) == "heard"  # the probe below can tell a refusal from an answer
        assert _meets(address).startswith("refused")
        assert _meets(address, _pem_files(Security.temporary(), "client", tmp_path / "theirs")).startswith("refused")
        with pytest.raises(OSError):  # plain TCP: no TLS at all
            Client(address.replace("tls://", "tcp://"), timeout="5s")


@pytest.mark.parametrize("flag, said", [(["--partition", "nope"], "invalid partition specified: nope"),
                                        (["--memory", "100TB"], "Requested node configuration is not available")])
def test_a_job_slurm_rejects_ends_compute_in_one_line(slurm, tmp_path, flag, said):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(TINY_STUDY))
    out = subprocess.run([BIN / "pgcore", "compute", config, "--cluster", "slurm", "--store", tmp_path / "store",
                          "--figures", "fig1", "--no-progress", *flag], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    line = one_error_line(out.stderr)
    assert out.returncode == 2 and "SLURM refuses the worker job" in line and said in line, line
    assert not list((tmp_path / "store").glob("*-*/seed*"))
