import pytest

from mbxmpp.util.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("7d", 604800.0), ("1w", 604800.0),
    ("250ms", 0.25), ("90", 90.0), ("0", 0.0), ("1.5h", 5400.0), (" 10 s ", 10.0),
    (45, 45.0), (0, 0.0), (2.5, 2.5), ("1h30m", 5400.0), ("1d12h", 129600.0), ("1m500ms", 60.5),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "s", "5M", "5 minutes", "1h30", "-5s", "1h-30m", -1, "abc", "5x", True,
                                 None, float("inf"), [1]])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError) as e:
        parse_duration(bad)
    assert repr(bad) in str(e.value)


def test_parse_duration_negative_message():
    with pytest.raises(ValueError, match="negative"):
        parse_duration("-5s")


@pytest.mark.parametrize("text, n", [
    ("512B", 512), ("256KiB", 262144), ("10MiB", 10485760), ("1GiB", 1 << 30),
    ("10MB", 10_000_000), ("1GB", 10 ** 9), ("1KB", 1000), ("1kB", 1000), ("2TB", 2 * 10 ** 12),
    ("1TiB", 1 << 40), ("1024", 1024), (4096, 4096), (0, 0), ("1.5KiB", 1536), ("10 MiB", 10485760),
])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["", "10mb", "10kib", "10K", "10M", "-1KiB", -5, "0.5B", "1.1KiB",
                                 "ten", True, 1.5, None])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError) as e:
        parse_size(bad)
    assert repr(bad) in str(e.value)


def test_parse_size_case_hint():
    with pytest.raises(ValueError, match="did you mean 'MiB'"):
        parse_size("10mib")


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (30, "30s"), (300, "5m"), (5400, "1h30m"), (72 * 3600, "3d"), (604800, "1w"),
    (0.25, "250ms"), (1.5, "1.5s"), (-60, "-1m"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("n, text", [
    (0, "0B"), (512, "512B"), (262144, "256KiB"), (10485760, "10MiB"), (10_000_000, "10MB"),
    (1000, "1KB"), (1536, "1.5KiB"), (1 << 30, "1GiB"), (1023, "1023B"),
])
def test_format_size(n, text):
    assert format_size(n) == text


@pytest.mark.parametrize("text", ["30s", "5m", "3d", "250ms", "1h30m", "1w2d"])
def test_duration_round_trip(text):
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize("text", ["256KiB", "10MiB", "10MB", "512B", "1GB"])
def test_size_round_trip(text):
    assert format_size(parse_size(text)) == text
