"""The kubernetes package stays off the worker's start-up path (~0.4 s of CPU to import); kubeapi names the
CrawlJob resource as crawljob.resource does."""

import subprocess
import sys


def test_the_worker_start_up_modules_do_not_import_kubernetes() -> None:
    """Everything the worker imports before it parses its first block (`__main__`, then `run`)."""
    code = (
        "import sys, crawljob_worker.__main__, crawljob_worker.run, crawljob_worker.report; "
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'kubernetes'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_first_patch_imports_kubernetes() -> None:
    """The counter-check: the probe above does see kubernetes once a status writer connects."""
    code = (
        "import sys; from crawljob_worker.kubeapi import KubeTarget, api_configuration; "
        "api_configuration(KubeTarget('ns', 'cj', server='http://127.0.0.1:9')); "
        "print('kubernetes' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"


def test_the_worker_patches_the_resource_the_operator_defines() -> None:
    """kubeapi keeps its own copy of the CrawlJob's group/version/plural (the worker cannot import crawljob)."""
    from crawljob import resource
    from crawljob_worker import kubeapi

    assert (kubeapi.GROUP, kubeapi.VERSION, kubeapi.PLURAL) == (
        resource.GROUP,
        resource.VERSION,
        resource.PLURAL,
    )
