"""DeferredWrites: the one timer under which small writes of many connections wait for company
(C2SConnection._write_soon; over the wire in tests/integration/test_sm.py)."""

import asyncio

from mbxmpp.net.connection import DeferredWrites


class Conn:
    def __init__(self, name: str, log: list) -> None:
        self.name = name
        self.log = log

    def _later_due(self) -> None:
        self.log.append((self.name, None))


async def test_one_timer_for_every_waiting_connection():
    loop = asyncio.get_running_loop()
    log: list = []
    d = DeferredWrites()
    a, b, c = Conn("a", log), Conn("b", log), Conn("c", log)
    d.add(a, loop, 0.05)
    timer = d._timer
    d.add(b, loop, 0.05)
    d.add(c, loop, 0.05)
    assert d._timer is timer and len(d) == 3  # no timer per connection
    assert d._due <= loop.time() + 0.05  # armed by the first, not re-armed by the others
    d.discard(b)  # b wrote something else meanwhile: its bytes left with it
    d.discard(b)  # and twice is harmless
    await asyncio.sleep(0.2)
    assert [n for n, _ in log] == ["a", "c"] and len(d) == 0 and d._timer is None


async def test_an_earlier_deadline_rearms_the_timer():
    loop = asyncio.get_running_loop()
    log: list = []
    d = DeferredWrites()
    d.add(Conn("slow", log), loop, 5.0)
    d.add(Conn("fast", log), loop, 0.02)
    assert d._due < loop.time() + 0.03
    await asyncio.sleep(0.2)
    # both left at the earlier deadline: a write may leave sooner than `within`, never later
    assert sorted(n for n, _ in log) == ["fast", "slow"]


async def test_a_connection_added_while_the_timer_runs_waits_no_longer():
    loop = asyncio.get_running_loop()
    log: list = []
    d = DeferredWrites()
    d.add(Conn("first", log), loop, 0.05)
    due = d._due
    await asyncio.sleep(0.01)
    d.add(Conn("second", log), loop, 0.05)
    assert d._due == due  # the timer already armed is the earlier deadline
    await asyncio.sleep(0.2)
    assert [n for n, _ in log] == ["first", "second"]
