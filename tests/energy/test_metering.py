"""The facade: provisional then final records, the store, cancellation, carbon on the record."""

import pytest

from service.energy import Accounting, CarbonModel, ConstantIntensity, Embodied, Metering, Method, Status
from service.energy.meters.estimate import SAMPLE_PERIOD_S, CpuPowerModel, CpuTimeEstimateMeter, RamPowerModel
from service.energy.meters.simulated import SimulatedDevice, SimulatedMeter
from service.energy.types import Component


def simulated(clock, **kwargs):
    dev = SimulatedDevice(50.0, {"c": 150.0}, tick_s=0.1, clock=clock)
    return dev, Metering([SimulatedMeter({"gpu0": dev}, clock=clock)], clock=clock, wall=clock, **kwargs)


def run_for(metering, clock, seconds):
    end = clock.now + seconds
    while clock.now < end:
        metering.sampler.sample_once()
        clock.now = min(end, metering.sampler.next_due_s())


def one_request(metering, dev, clock, seconds):
    """A request of class "c" that runs ``seconds`` on the simulated device, after 0.5-1 s of quiet."""
    ticket = metering.begin("m", "task", work_class_="c")
    dev.begin(ticket.request_id, "c")
    clock.advance(seconds)
    dev.end(ticket.request_id)
    metering.end(ticket)
    run_for(metering, clock, 0.5)
    return metering.record(ticket.request_id)


def test_provisional_at_response_time_then_final(clock):
    dev, metering = simulated(clock)
    finals = []
    metering.subscribe(finals.append)
    run_for(metering, clock, 1.0)  # idle, learn the 50 W baseline
    records = []
    for _ in range(40):
        ticket = metering.begin("m", "task", tokens_in=12, work_class_="c")
        dev.begin(ticket.request_id, "c")
        clock.advance(0.02)
        dev.end(ticket.request_id)
        metering.end(ticket, tokens_out=3)
        records.append(metering.result(ticket))
        run_for(metering, clock, 0.01)
    prov = records[-1]
    assert prov.status is Status.PROVISIONAL and prov.energy_j > 0
    run_for(metering, clock, 0.5)
    final = metering.record(prov.request_id)
    assert final.status is Status.FINAL and final is finals[-1]
    assert final.tokens_in == 12 and final.tokens_out == 3 and final.model == "m" and final.task == "task"
    assert final.method is Method.MEASURED
    # truth: 150 W active for 20 ms = 3 J; loaded adds the 50 W baseline for the time it ran: 1 J
    late = finals[20:]
    assert sum(r.active_j for r in late) / len(late) == pytest.approx(3.0, rel=0.05)
    assert sum(r.energy_j for r in late) / len(late) == pytest.approx(4.0, rel=0.05)
    assert prov.energy_j == pytest.approx(final.energy_j, rel=0.25)


def test_marginal_accounting_reports_active_energy_only(clock):
    dev, metering = simulated(clock, accounting=Accounting.MARGINAL)
    run_for(metering, clock, 1.0)
    rec = one_request(metering, dev, clock, 0.05)
    assert rec.energy_j == pytest.approx(rec.active_j) and rec.idle_j > 0
    assert rec.component_j(Component.GPU) == pytest.approx(rec.active_j)


def test_cancelled_request_costs_nothing(clock):
    dev, metering = simulated(clock)
    ticket = metering.begin("m", "task")
    metering.cancel(ticket)
    run_for(metering, clock, 0.5)
    assert metering.record(ticket.request_id) is None
    tot = metering.totals()["gpu0"]
    assert tot.attributed_active_j == 0 and tot.unattributed_idle_j == pytest.approx(tot.measured_j)


def test_store_is_bounded(clock):
    dev, metering = simulated(clock, store_size=5)
    tickets = []
    for _ in range(8):
        t = metering.begin("m", "task")
        clock.advance(0.01)
        metering.end(t)
        tickets.append(t)
    run_for(metering, clock, 0.5)
    assert metering.record(tickets[0].request_id) is None
    assert metering.record(tickets[-1].request_id).status is Status.FINAL


def test_carbon_on_the_record_uses_the_loaded_energy_and_device_time(clock):
    carbon = CarbonModel(ConstantIntensity(400.0), pue=1.2, embodied=Embodied(total_g=1_000_000, lifetime_s=1e6))
    dev, metering = simulated(clock, carbon=carbon)
    run_for(metering, clock, 0.5)
    rec = one_request(metering, dev, clock, 0.1)
    assert rec.carbon.operational_g == pytest.approx(rec.energy_j / 3.6e6 * 400.0 * 1.2)
    assert rec.carbon.embodied_g == pytest.approx(rec.device_time_s * 1.0)
    assert rec.device_time_s == pytest.approx(0.1, rel=0.01)
    assert rec.carbon.sci_g == pytest.approx(rec.carbon.operational_g + rec.carbon.embodied_g)
    data = rec.as_dict()
    assert data["status"] == "final" and data["components"]["gpu"]["method"] == "measured"


def test_estimated_meters_are_labelled_estimated_end_to_end(clock):
    cpu_s = {"v": 0.0}
    meter = CpuTimeEstimateMeter(CpuPowerModel("test cpu", 5.0, "test"), RamPowerModel(16.0, 6.0),
                                 cpu_seconds=lambda: cpu_s["v"], clock=clock)
    metering = Metering([meter], clock=clock, wall=clock)
    for _ in range(4):  # a quiet second first, as after start-up: the model learns that idle burns no CPU time
        metering.sampler.sample_once()
        clock.advance(SAMPLE_PERIOD_S)
    t = metering.begin("m", "task")
    clock.advance(0.2)
    cpu_s["v"] += 0.3  # 1.5 threads busy for 200 ms
    metering.end(t)
    clock.advance(SAMPLE_PERIOD_S)  # the estimate's next read is due
    metering.sampler.sample_once()
    rec = metering.record(t.request_id)
    assert rec.status is Status.FINAL and rec.method is Method.ESTIMATED
    assert rec.component_j(Component.CPU) == pytest.approx(0.3 * 5.0, rel=0.06)
    assert rec.component_j(Component.RAM) == pytest.approx(0.2 * 6.0, rel=0.06)


def test_codecarbon_backed_estimate_meter_reads_real_values():
    meter = CpuTimeEstimateMeter()
    assert meter.cpu.watts_per_thread > 0 and meter.ram.power_w > 0
    first = meter.read()
    sum(i * i for i in range(200_000))
    second = meter.read()
    assert second[0] > first[0] and second[1] > first[1]


def test_method_combines_devices_and_none_means_no_device_was_metered():
    assert Method.combine([Method.MEASURED, Method.ESTIMATED]) is Method.MIXED
    assert Method.combine([Method.ESTIMATED, Method.NONE]) is Method.ESTIMATED
    assert Method.combine([]) is Method.NONE


def test_a_request_with_no_meter_at_all_is_labelled_none_not_estimated(clock):
    from service.energy.meters.base import NullMeter

    metering = Metering([NullMeter("nothing here")], clock=clock, wall=clock)
    with metering.track("m", "task") as ticket:
        clock.advance(0.01)
    record = metering.result(ticket)
    assert record.energy_j == 0 and record.method is Method.NONE


def test_a_ticking_device_no_request_may_be_charged_on_is_read_sparsely(clock):
    reads = {}
    for charged in (None, ("ram",)):
        dev = SimulatedDevice(50.0, {}, tick_s=0.1, phase_s=0.03, clock=clock)
        meter = SimulatedMeter({"gpu0": dev}, clock=clock)
        read, count = meter.read, []
        meter.read = lambda read=read, count=count: count.append(1) or read()
        metering = Metering([meter], clock=clock, wall=clock)
        if charged is not None:
            metering.charge_on(charged)  # as the service does when it serves CPU models only
        start = clock.now
        run_for(metering, clock, 3.0)
        reads[charged] = len(count)
        line = metering.sampler.timeline["gpu0"]
        assert metering.totals()["gpu0"].measured_j == pytest.approx(line[-1].energy_j - line[0].energy_j)
        assert line[-1].t_s - line[0].t_s >= 1.0  # the energy of every tick between them is counted
        clock.now = start + 10.0
    assert reads[("ram",)] <= 5 < 50 < reads[None]  # once a second, against a few reads every tick


def test_a_live_meter_gives_the_first_requests_their_measured_energy_at_response_time(clock):
    """The CPU-time estimate is read at response time (Meter.live): the part of a request since the sampler's last
    read is what the counter gathered, not a power the model has yet to learn. The first requests after start
    used to get the device's last interval's draw above idle (here 0 W: 0 J, and 0.40x their finals in a real
    server's first requests)."""
    cpu_s = {"v": 0.0}
    meter = CpuTimeEstimateMeter(CpuPowerModel("test cpu", 5.0, "test"), RamPowerModel(16.0, 6.0),
                                 cpu_seconds=lambda: cpu_s["v"], clock=clock)
    metering = Metering([meter], clock=clock, wall=clock)
    for _ in range(4):  # a quiet second
        metering.sampler.sample_once()
        clock.advance(SAMPLE_PERIOD_S)
    metering.sampler.sample_once()
    provisional = []
    for busy_s in (0.3, 0.1):  # two requests in one sampling interval, the second doing a third of the work
        t = metering.begin("m", "task")
        clock.advance(0.1)
        cpu_s["v"] += busy_s
        metering.end(t)
        provisional.append((t.request_id, metering.result(t)))
    first = provisional[0][1]
    assert first.status is Status.PROVISIONAL
    assert first.component_j(Component.CPU) == pytest.approx(0.3 * 5.0)  # all its own: nothing else ran yet
    # the second shares the interval so far by time, as the final split will: (0.3 + 0.1) x 5 W / 2
    assert provisional[1][1].component_j(Component.CPU) == pytest.approx(0.4 * 5.0 / 2)
    clock.advance(SAMPLE_PERIOD_S - 0.2)
    metering.sampler.sample_once()
    for request_id, _ in provisional:
        final = metering.record(request_id)
        assert final.status is Status.FINAL
        assert final.component_j(Component.CPU) == pytest.approx(0.4 * 5.0 / 2)


def test_request_ids_are_unique_and_not_enumerable(clock):
    """Ids were a process prefix and a counter: one API key holder could walk every other client's records."""
    _, metering = simulated(clock)
    ids = [metering.begin("m", "task").request_id for _ in range(2000)]
    assert len(set(ids)) == len(ids) and all(len(i) == 20 and int(i, 16) >= 0 for i in ids)
    assert len({i[:8] for i in ids}) > 1900  # no shared prefix, no order to step through
    _, other = simulated(clock)
    assert other.begin("m", "task").request_id not in ids  # another process's first id is another id
