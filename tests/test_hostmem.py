"""steve1_ray.hostmem: with `reuse_freed_memory()` a freed large block is reused by the next allocation without
faulting its pages in again (glibc's default gives it back to the OS and faults a fresh one in every time)."""
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import resource, sys
    import numpy as np
    if sys.argv[1] == "reuse":
        from steve1_ray.hostmem import reuse_freed_memory
        print(reuse_freed_memory(), file=sys.stderr)
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = np.ones(2**25); del x  # 256 MiB, touched, freed
    before = faults()
    for _ in range(3):  # what a training step does: the same large blocks again
        x = np.ones(2**25); del x
    print(faults() - before)
""")


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_blocks_are_reused_without_faulting_them_in_again():
    huge_pages = 3 * 2**28 // 2**21  # three 256 MiB arrays, in 2 MiB pages (numpy asks for huge pages; 4 KiB: 512x)
    default, reused = _faults("default"), _faults("reuse")
    assert default >= huge_pages, default  # glibc: every allocation mmaps and faults in fresh pages
    assert reused < 10, reused             # reused: no page faulted in again


def test_reuse_is_applied_once_and_reports_it():
    from steve1_ray import hostmem

    first = hostmem.reuse_freed_memory()
    assert first == hostmem.reuse_freed_memory()
    assert set(first) == {"applied", "reason"}
    if sys.platform.startswith("linux"):
        assert first["applied"] is True, first
