"""The cohort's Dask servers: a local cluster listens on loopback only; TLS to a remote one."""

import ipaddress
from urllib.parse import urlparse

import psutil
import pytest
from distributed import LocalCluster, Security

from napari_xaimed import XaimedError
from napari_xaimed.cli.main import main
from napari_xaimed.cohort import (
    EvaluationJob,
    cohort_client,
    read_cases,
    run_cohort,
    tls_security,
)
from napari_xaimed.cohort.sample import write_sample_cohort


def _listening() -> set[tuple[int, str, int]]:
    """(pid, address, port) of every listening socket of this process and its children."""
    me = psutil.Process()
    found = set()
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found |= {(proc.pid, c.laddr.ip, c.laddr.port) for c in conns
                  if c.status == psutil.CONN_LISTEN}
    return found


def test_local_cluster_scheduler_workers_and_dashboard_listen_on_loopback_only():
    import bokeh  # noqa: F401  (the dashboard is started only when bokeh is installed)

    before = _listening()
    with cohort_client(None, 1) as client:
        opened = _listening() - before
        assert urlparse(client.scheduler.address).hostname == "127.0.0.1"
        dashboard = urlparse(client.dashboard_link)
        assert dashboard.hostname == "127.0.0.1"
        ports = {port for _, _, port in opened}
        assert urlparse(client.scheduler.address).port in ports
        assert dashboard.port in ports  # the dashboard really runs, and is among those checked
        for worker in client.scheduler_info()["workers"]:
            assert urlparse(worker).port in ports
        # every socket the cluster opened (scheduler, dashboard, nannies, workers and their
        # HTTP servers) is on the loopback interface, none on 0.0.0.0 or ::
        assert opened and all(ipaddress.ip_address(ip).is_loopback for _, ip, _ in opened), opened


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """A cluster that accepts TLS clients only, and its credentials as PEM files."""
    security = Security.temporary()
    folder = tmp_path_factory.mktemp("tls")
    pem = security.get_tls_config_for_role("client")
    for name in ("ca_file", "cert", "key"):
        (folder / f"{name}.pem").write_text(pem[name])
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, security=security,
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address, folder


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory):
    return write_sample_cohort(tmp_path_factory.mktemp("cases"), 2, shape=(40, 40, 40), seed=2)


def test_cohort_runs_on_a_tls_scheduler_with_pem_files(tls_cluster, two_cases, tmp_path):
    address, pem = tls_cluster
    assert address.startswith("tls://")
    cases = read_cases(two_cases, ("reference", "prediction"))
    security = tls_security(pem / "ca_file.pem", pem / "cert.pem", pem / "key.pem")
    result = run_cohort(EvaluationJob(), cases, tmp_path / "api", scheduler=address,
                        security=security)
    assert (result.ran, result.failed) == (2, 0)
    args = ["evaluate", "--cohort", str(two_cases), "--out", str(tmp_path / "cli"),
            "--scheduler", address, "--tls-ca-file", str(pem / "ca_file.pem"),
            "--tls-cert", str(pem / "cert.pem"), "--tls-key", str(pem / "key.pem")]
    assert main(args) == 0
    assert (tmp_path / "cli" / "summary.csv").is_file()


def test_tls_scheduler_without_credentials_or_with_missing_files_is_refused(tls_cluster,
                                                                           two_cases, tmp_path,
                                                                           capsys):
    address, pem = tls_cluster
    cases = read_cases(two_cases, ("reference", "prediction"))
    with pytest.raises(XaimedError, match="speaks TLS but no credentials"):
        run_cohort(EvaluationJob(), cases, tmp_path, scheduler=address)
    with pytest.raises(XaimedError, match="--tls-cert: no file"):
        tls_security(pem / "ca_file.pem", pem / "missing.pem")
    base = ["evaluate", "--cohort", str(two_cases), "--out", str(tmp_path), "--scheduler",
            address]
    assert main([*base, "--tls-cert", str(pem / "cert.pem")]) == 2
    assert "needs --tls-ca-file and --tls-cert" in capsys.readouterr().err
