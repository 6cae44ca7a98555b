"""Progress (geomax.inference.progress): items done / total, on a bar or to a process-wide sink."""
from geomax.inference.progress import Progress, progress_sink, set_progress_sink


def test_a_sink_receives_every_update_instead_of_a_bar():
    calls = []
    with progress_sink(lambda unit, done, total: calls.append((unit, done, total))):
        with Progress(3, True, "tiles") as bar:
            assert bar._bar is None  # no fastprogress bar while a sink is set
            bar.advance()
            bar.advance(2)
        with Progress(5, False, "blocks") as quiet:  # disabled: counts, reports nothing
            quiet.advance()
    assert calls == [("tiles", 0, 3), ("tiles", 1, 3), ("tiles", 3, 3)]
    assert quiet.done == 1


def test_progress_sink_restores_the_sink_before_it():
    outer, inner = [], []

    def outer_sink(*update):
        outer.append(update)

    previous = set_progress_sink(outer_sink)
    try:
        with progress_sink(lambda *update: inner.append(update)):
            Progress(1, True).advance()
        with Progress(2, True, "blocks") as bar:
            bar.advance()
    finally:
        assert set_progress_sink(previous) is outer_sink
    assert inner == [("tiles", 0, 1), ("tiles", 1, 1)]
    assert outer == [("blocks", 0, 2), ("blocks", 1, 2)]
