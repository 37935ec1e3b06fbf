"""The stall watchdog's decisions: who is stalled, what is said, and when nothing is (no false alarms)."""

from __future__ import annotations

from llmtrain.training.watchdog import EXIT_STALLED, Beat, Heartbeat, StallWatchdog, stalled_ranks


def beat(rank: int, seq: int, step: int, phase: str, since: float = 100.0) -> Beat:
    return Beat(rank, f"node{rank}", 1000 + rank, seq, step, phase, since, published=since)


class FakeStore:
    """The part of torch's TCPStore the watchdog uses, in memory."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def set(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def get(self, key: str) -> bytes:
        return self.data[key]

    def check(self, keys: list[str]) -> bool:
        return all(k in self.data for k in keys)

    def multi_get(self, keys: list[str]) -> list[bytes]:
        return [self.data[k] for k in keys]


def test_the_rank_behind_the_others_is_stalled():
    beats = [beat(0, 40, 4, "backward"), beat(1, 33, 3, "after_step"), beat(2, 40, 4, "backward")]
    assert [b.rank for b in stalled_ranks(beats, first_step=0)] == [1]


def test_everyone_in_the_same_phase_is_not_a_stall():
    beats = [beat(r, 55, 6, "checkpoint") for r in range(4)]
    assert stalled_ranks(beats, first_step=0) == []


def test_slow_phases_first_step_and_missing_heartbeats_are_not_named():
    ahead = beat(0, 70, 8, "backward")
    for behind in (beat(1, 60, 7, "evaluation"), beat(1, 61, 7, "checkpoint"), beat(1, 3, 1, "data"),
                   beat(1, 1, 1, "start")):
        assert stalled_ranks([ahead, behind], first_step=0) == [], behind
    assert stalled_ranks([ahead, None], first_step=0) == []
    # after a resume at step 6 the first step is 7; step 8 is not exempt any more
    assert stalled_ranks([beat(0, 20, 8, "backward"), beat(1, 12, 7, "data")], first_step=6) == []
    assert [b.rank for b in stalled_ranks([beat(0, 30, 9, "backward"), beat(1, 20, 8, "data")], first_step=6)] == [1]


def test_heartbeat_sequence_and_evaluation_phase():
    hb = Heartbeat(rank=0, first_step=4)
    assert (hb.current.seq, hb.current.step, hb.current.phase) == (0, 5, "start")
    hb.beat("data", 5)
    seen = []
    evaluate = hb.around("evaluation", lambda model: seen.append(hb.current.phase) or {"loss": 1.0})
    assert evaluate("m") == {"loss": 1.0} and seen == ["evaluation"]
    assert (hb.current.seq, hb.current.phase) == (3, "step_end")
    assert hb.around("evaluation", None) is None


def _watchdog(store: FakeStore, hb: Heartbeat, exits: list[int]) -> StallWatchdog:
    return StallWatchdog(hb, store, world_size=2, timeout_s=5, collective_timeout_s=120, key_prefix="hb/0",
                         command="train", last_checkpoint=lambda: "/ckpt/t/step_000002", exit=exits.append)


def test_the_watchdog_names_the_stalled_rank_only_after_the_timeout():
    store, exits = FakeStore(), []
    hb = Heartbeat(rank=0, first_step=0)
    for phase in ("data", "forward", "backward"):
        hb.beat(phase, 4)
    wd = _watchdog(store, hb, exits)
    wd._publish()
    other = Beat(1, "node1", 4242, 1, 3, "after_step", hb.current.since - 1, published=hb.current.since)
    store.set("hb/0/1", other.encode())
    assert Beat.decode(store.get("hb/0/0")).seq == hb.current.seq  # published
    assert wd.check(hb.current.since + 4.9) is None  # not yet
    text, part = wd.check(hb.current.since + 6)
    assert part == "waiting"
    assert text.startswith("stalled rank: rank 1 (host node1, pid 4242): step 3, phase 'after_step' for 7 s. ")
    assert "rank 0 on " in text and "waited 6 s for them (> train.stall_timeout_s=5 s)" in text
    assert "See the stalled rank's log" in text
    assert f"exit code {EXIT_STALLED}" in text and "train.collective_timeout_s=120 s" in text
    assert "The last complete checkpoint is /ckpt/t/step_000002." in text


def test_the_stalled_rank_knows_it_is_the_one_and_a_lost_store_is_reported():
    store, exits = FakeStore(), []
    hb = Heartbeat(rank=0, first_step=0)
    hb.beat("data", 3)
    wd = _watchdog(store, hb, exits)
    wd._publish()
    store.set("hb/0/1", beat(1, 9, 3, "backward", since=hb.current.since).encode())
    text, part = wd.check(hb.current.since + 6)
    assert part == "stalled" and "stalled rank: rank 0" in text
    assert "rank 0 itself noticed it made no progress for 6 s (> train.stall_timeout_s=5 s)" in text

    class GoneStore(FakeStore):
        def check(self, keys):
            raise RuntimeError("Connection reset by peer")

    wd = _watchdog(GoneStore(), hb, exits)
    text, part = wd.check(hb.current.since + 6)
    assert part == "unknown" and "rank 0 on " in text and "has been in phase 'data' of step 3 for 6 s" in text
    assert "heartbeats cannot be read from the rendezvous store (Connection reset by peer)" in text


def test_a_failed_collective_gets_the_ranks_behind_named():
    store, exits = FakeStore(), []
    hb = Heartbeat(rank=0, first_step=0)
    hb.beat("all_reduce", 4)
    wd = _watchdog(store, hb, exits)
    assert wd.diagnosis() == ""  # rank 1 has published nothing: nobody to name
    store.set("hb/0/1", Beat(1, "node1", 77, 0, 1, "start", hb.current.since).encode())
    assert wd.diagnosis() == ""  # still starting: never named
    store.set("hb/0/1", Beat(1, "node1", 77, 0, 3, "after_step", hb.current.since).encode())
    text = wd.diagnosis()
    assert text.startswith(" Ranks behind the others (last heartbeat): rank 1 (host node1, pid 77): step 3, "
                           "phase 'after_step' for "), text
    assert text.endswith("(rank 0 is at step 4, phase 'all_reduce').")
    assert exits == []
