import errno
import os

import pytest

from squeeze_span.errors import describe_os_error


def os_error(code: int, path: str, other_path: str | None = None) -> OSError:
    return OSError(code, os.strerror(code), path, None, other_path)  # the 4th argument is Windows' error code


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.EROFS, "choose a writable output_dir or output path"),
        (errno.ENOSPC, "free space on that disk, or choose an output_dir or output path on another"),
        (errno.EACCES, "choose a location you may use, or change its permissions"),
        (errno.EISDIR, "pass a file path, not a folder"),
    ],
)
def test_an_os_error_is_one_line_naming_path_reason_and_a_fix_for_its_errno(code, fix):
    message = describe_os_error(os_error(code, "runs/x/config.yaml"))
    assert message == f"runs/x/config.yaml: {os.strerror(code)}; {fix}"


def test_a_rename_names_both_paths_and_an_unknown_errno_still_gets_a_fix():
    assert describe_os_error(os_error(errno.EXDEV, "a.tmp", "b")) == (
        f"a.tmp -> b: {os.strerror(errno.EXDEV)}; check the path and the disk"
    )
    assert describe_os_error(OSError("socket closed")) == "socket closed; check the path and the disk"
