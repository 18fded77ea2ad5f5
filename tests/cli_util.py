"""What the CLI tests share: the CLI run in-process, and the process's thread count kept across tests."""
import contextlib
import io

import pytest

import cnnnative as cn
from cnnnative.__main__ import main as cli_main


def run_cli(args):
    """(exit status, stdout, stderr) of the CLI run in-process; argparse errors give status 2."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli_main(args)
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def keep_threads():
    """CLI runs with --threads N set the process's count; each test leaves it as it found it."""
    n = cn.get_num_threads()
    yield
    cn.set_num_threads(n)
