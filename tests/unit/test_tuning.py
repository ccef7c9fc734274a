import gc

from mbxmpp.util.tuning import GEN0_THRESHOLD, tune_for_serving, tune_malloc


def test_tune_for_serving_freezes_startup_objects_and_raises_gen0():
    before = gc.get_threshold()
    try:
        tune_for_serving()
        assert gc.get_threshold() == (GEN0_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > 1000  # everything imported so far
        # cyclic garbage is still collected
        a: list = []
        a.append(a)
        del a
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_tune_malloc_sets_glibc_thresholds():
    import platform

    import pytest
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt thresholds are glibc's")
    assert tune_malloc()  # mallopt accepted both thresholds
