from agent.sources import ErrorEvent
from agent.triggers import Gate


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def event(code, n=0, done=None):
    return ErrorEvent(f"id-{code}-{n}", code, "iso8583", "test", "t", done=(lambda: done.append(n)) if done is not None else (lambda: None))


def test_a_burst_is_one_diagnosis_counting_its_events():
    clock = Clock()
    gate = Gate(settle_s=0.5, max_wait_s=2.0, debounce_s=60, max_per_hour=10, clock=clock)
    for i in range(100):
        gate.add(event("96", i))
        clock.now += 0.01
        assert gate.due() == []
    clock.now += 0.5
    (group,) = gate.due()
    assert group.code == "96" and len(group.events) == 100


def test_a_steady_stream_is_diagnosed_by_max_wait():
    clock = Clock()
    gate = Gate(0.5, 2.0, 60, 10, clock)
    sizes = []
    for i in range(30):
        gate.add(event("91", i))
        clock.now += 0.1
        sizes += [len(g.events) for g in gate.due()]
    assert sizes == [20]


def test_repeats_within_debounce_are_counted_and_done_not_diagnosed():
    clock, done = Clock(), []
    gate = Gate(0.5, 2.0, 60, 10, clock)
    gate.add(event("51", 0))
    clock.now += 1
    (group,) = gate.due()
    gate.add(event("51", 1, done))
    assert done == [1] and len(group.events) == 2
    clock.now += 61
    gate.add(event("51", 2))
    clock.now += 1
    assert len(gate.due()) == 1


def test_codes_are_grouped_apart_and_diagnosed_in_order():
    clock = Clock()
    gate = Gate(0.5, 2.0, 60, 10, clock)
    gate.add(event("96"))
    clock.now += 0.1
    gate.add(event("A0"))
    clock.now += 1
    assert [g.code for g in gate.due()] == ["96", "A0"]


def test_hourly_cap_drops_and_marks_done():
    clock, done = Clock(), []
    gate = Gate(0.0, 0.0, 0.0, max_per_hour=2, clock=clock)
    for i in range(4):
        gate.add(event(f"C{i}", i, done))
        clock.now += 1
    assert [g.code for g in gate.due()] == ["C0", "C1"]
    assert done == [2, 3]
    clock.now += 3601
    gate.add(event("C9"))
    assert len(gate.due()) == 1


def test_wait_hint():
    clock = Clock()
    gate = Gate(0.5, 2.0, 60, 10, clock)
    assert gate.wait_hint() is None
    gate.add(event("05"))
    assert gate.wait_hint() == 0.5


def test_repeats_and_capped_events_are_answered_at_once():
    clock, answers = Clock(), []
    gate = Gate(0.0, 0.0, 60.0, max_per_hour=1, clock=clock)
    first = event("51")
    gate.add(first)
    clock.now += 1
    gate.due()
    repeat = event("51", 1)
    repeat.reply = answers.append
    gate.add(repeat)
    capped = event("96", 2)
    capped.reply = answers.append
    gate.add(capped)
    clock.now += 1
    assert gate.due() == []
    assert answers[0] == {"repeat": True, "repeat_of": first.id, "events": 2}
    assert answers[1]["ok"] is False and "hourly cap of 1" in answers[1]["error"]
