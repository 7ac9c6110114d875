"""preprocessing.beam_speed: the memoised DoFn inspection gives Beam's own answers, only inside the
context, and the local runner runs stateful work correctly (real Beam, tiny inputs, a few seconds)."""
import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain

from preprocessing import beam_speed, pipeline

BEAM_GET_DOFN_SPECS = userstate.get_dofn_specs


class CountPerKey(beam.DoFn):
    """Stateful: a running count per key, emitted by an event-time timer at the window's end."""
    COUNT = userstate.ReadModifyWriteStateSpec("count", VarIntCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)

    def process(self, kv, count=beam.DoFn.StateParam(COUNT), flush=beam.DoFn.TimerParam(FLUSH),
                key=beam.DoFn.KeyParam, window=beam.DoFn.WindowParam):
        count.write((count.read() or 0) + 1)
        flush.set(window.end)

    @userstate.on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, count=beam.DoFn.StateParam(COUNT)):
        yield key, count.read()


class Helper:
    def stateful(self, x, count=beam.DoFn.StateParam(CountPerKey.COUNT)):
        return [x]


class BorrowsMethod(beam.DoFn):
    """Holds another object's bound method: its signature is instance state (never cached)."""

    def __init__(self):
        self.extra = Helper().stateful

    def process(self, x):
        yield x


class PropertyMethod(beam.DoFn):
    """A property that returns a bound method: only the instance can say (never cached)."""

    @property
    def borrowed(self):
        return Helper().stateful

    def process(self, x):
        yield x


class DuplicateParams(beam.DoFn):
    def process(self, x, a=beam.DoFn.KeyParam, b=beam.DoFn.KeyParam):
        yield x


def _dofns():
    return [pipeline.ParseInteractions(), pipeline.ParseTableRow("item_id"), pipeline.BuildBatches(20, None),
            CountPerKey(), CountPerKey(), beam.Map(len).dofn, beam.Map(lambda x: x).dofn,
            beam.FlatMap(Helper().stateful).dofn, BorrowsMethod(), PropertyMethod()]


def test_memoised_specs_equal_beams_own_and_are_reused():
    expected = [BEAM_GET_DOFN_SPECS(d) for d in _dofns()]
    assert expected[3] == ({CountPerKey.COUNT}, {CountPerKey.FLUSH})
    for uncached in (7, 8, 9):   # bound methods held by the instance: Beam sees their StateParam
        assert expected[uncached][0] == {CountPerKey.COUNT}
    before = dict(beam_speed.stats)
    with beam_speed.memoised_dofn_specs():
        assert userstate.get_dofn_specs is not BEAM_GET_DOFN_SPECS
        for _ in range(2):
            assert [userstate.get_dofn_specs(d) for d in _dofns()] == expected
            assert userstate.is_stateful_dofn(CountPerKey()) and not userstate.is_stateful_dofn(beam.Map(len).dofn)
        with pytest.raises(ValueError, match="duplicate"):   # Beam's errors still come through
            userstate.get_dofn_specs(DuplicateParams())
    assert userstate.get_dofn_specs is BEAM_GET_DOFN_SPECS, "installed only inside the context"
    delta = {k: beam_speed.stats[k] - before[k] for k in before}
    assert delta["uncached"] >= 2 * 3
    assert delta["hits"] > delta["misses"] > 0


def test_nested_contexts_restore_beams_function():
    with beam_speed.memoised_dofn_specs():
        with beam_speed.memoised_dofn_specs():
            pass
        assert userstate.get_dofn_specs is not BEAM_GET_DOFN_SPECS, "the outer context is still active"
    assert userstate.get_dofn_specs is BEAM_GET_DOFN_SPECS


def test_local_runner_runs_stateful_pipelines():
    options = beam.options.pipeline_options.PipelineOptions(["--direct_num_workers=1"])
    runner = beam_speed.local_runner(options)
    assert type(runner).__name__ == "FnApiRunner"
    with beam_speed.installed(), beam.Pipeline(runner=runner, options=options) as p:
        counts = (p | beam.Create([("a", 1), ("b", 2), ("a", 3)]) | beam.ParDo(CountPerKey()))
        assert_that(counts, equal_to([("a", 2), ("b", 1)]))


def test_memoised_option_views_share_values_and_are_released():
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

    beam_view_as = PipelineOptions.view_as
    options = PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=3"])
    with beam_speed.memoised_option_views():
        direct = options.view_as(DirectOptions)
        assert options.view_as(DirectOptions) is direct, "one view per options object and class"
        assert direct.direct_num_workers == 3 and options.view_as(StandardOptions).runner == "DirectRunner"
        direct.direct_num_workers = 5                      # writes go to the shared option values
        assert options.view_as(DirectOptions).direct_num_workers == 5
        assert PipelineOptions(["--direct_num_workers=2"]).view_as(DirectOptions).direct_num_workers == 2
    assert PipelineOptions.view_as is beam_view_as and not beam_speed._views
    assert options.view_as(DirectOptions).direct_num_workers == 5 and options.view_as(DirectOptions) is not direct


def test_chunked_stage_inputs_deliver_every_element_once_in_pieces():
    """A stage input of ~24 MB (buffered as ~10 MB chunks by the producing worker) reaches the
    consumer as several messages, each element exactly once; Beam's function is back afterwards."""
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    beam_send = fn_runner.BundleManager._send_input_to_worker
    options = beam.options.pipeline_options.PipelineOptions(
        ["--direct_num_workers=1", "--direct_running_mode=in_memory"])
    before = dict(beam_speed.stats)
    blob = lambda i, j: bytes([i, j % 256]) * 50_000   # noqa: E731  (100 KB, distinct per element)
    with beam_speed.chunked_stage_inputs(), beam.Pipeline(runner=beam_speed.local_runner(options),
                                                          options=options) as p:
        big = p | beam.Create(range(4)) | beam.FlatMap(lambda i: [(i, j, blob(i, j)) for j in range(60)])
        total = big | "Sizes" >> beam.Map(lambda e: len(e[2])) | beam.CombineGlobally(sum)
        # the side input comes from `big` itself, so this map cannot be fused with big's producer:
        # `big` is buffered and sent to it as a stage input
        out = big | "Check" >> beam.Map(lambda e, t: (e[0], e[1], e[2] == blob(e[0], e[1]), t),
                                        beam.pvalue.AsSingleton(total))
        assert_that(out, equal_to([(i, j, True, 240 * 100_000) for i in range(4) for j in range(60)]))
    assert fn_runner.BundleManager._send_input_to_worker is beam_send
    sends = beam_speed.stats["input_sends"] - before["input_sends"]
    chunks = beam_speed.stats["input_chunks"] - before["input_chunks"]
    assert sends > 0 and chunks > sends, (sends, chunks)
