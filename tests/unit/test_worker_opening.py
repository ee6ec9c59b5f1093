"""The worker's entry point sends an S3 GET before importing pandas and pyarrow (opening.py)."""

import json
import subprocess
import sys

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
