import os

from agent.runtime.heartbeat import Heartbeats


def test_a_forked_process_beats_into_the_parents_slots() -> None:
    beats = Heartbeats(3)
    assert [beats.last(i) for i in range(3)] == [0.0, 0.0, 0.0]
    pid = os.fork()
    if pid == 0:
        beats.beat(2, 1234.5)
        os._exit(0)
    os.waitpid(pid, 0)
    assert beats.last(2) == 1234.5
    assert beats.last(0) == 0.0
    beats.beat(0)
    assert beats.last(0) > 0
    beats.close()
