"""The worker's entry point sends an S3 GET before importing pandas and pyarrow (opening.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from crawljob_worker.opening import start_opening
from crawljob_worker.settings import settings_from_args


def test_the_entry_point_imports_neither_pandas_nor_pyarrow() -> None:
    probe = (
        "import json, sys, crawljob_worker.__main__, crawljob_worker.opening;"
        "print(json.dumps(sorted(m for m in ('pandas', 'pyarrow', 'numpy') if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_settings_without_dtypes_do_not_import_pyarrow() -> None:
    probe = (
        "import json, sys; from crawljob_worker.settings import settings_from_args;"
        "settings_from_args(['s3://b/k.csv', '--output', 'out/'], {});"
        "print(json.dumps('pyarrow' in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) is False


def test_a_local_source_is_not_opened_early() -> None:
    settings = settings_from_args(["data.csv", "--output", "out/"], {})
    assert start_opening(settings) == (None, None)


def test_a_local_run_imports_neither_botocore_nor_urllib3(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a,b\n1,x\n")
    probe = (
        "import json, sys; from crawljob_worker.__main__ import main;"
        f"code = main([{str(source)!r}, '--output', {str(tmp_path / 'out')!r}, '--termination-log', "
        f"{str(tmp_path / 't')!r}]);"
        "print(json.dumps([code, sorted(m for m in ('botocore', 'urllib3', 'boto3') if m in sys.modules)]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == [0, []]


def test_numpy_starts_no_openblas_threads_in_the_worker() -> None:
    probe = (
        "import os, json, sys; from crawljob_worker.__main__ import main; main(['--help']);"
        "import numpy; print(json.dumps([os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task'))]))"
    )
    environ = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=environ
    )
    assert json.loads(done.stdout.splitlines()[-1]) == ["1", 1]


def test_a_given_openblas_thread_count_is_kept() -> None:
    probe = (
        "import os, json; from crawljob_worker.__main__ import main; main(['--help']);"
        "print(json.dumps(os.environ['OPENBLAS_NUM_THREADS']))"
    )
    environ = {**os.environ, "OPENBLAS_NUM_THREADS": "3"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=environ
    )
    assert json.loads(done.stdout.splitlines()[-1]) == "3"
