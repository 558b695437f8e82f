"""Every Prometheus metric, declared in one module (the only one that imports prometheus_client).

Base units: joules, seconds, grams, watts. Labels are bounded: model and task come from the registry file,
component/scope/direction/status from fixed sets, device from the meters found at start-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from service.energy import Accounting, Component, EnergyRecord, Metering

ENERGY_BUCKETS_J = (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000, 3000)
MODEL_STATES = ("loading", "ready", "failed")
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, registry: CollectorRegistry, metering: Metering | None,
                 queue_depth: Callable[[], dict[str, int]], models: dict[str, str] | None = None,
                 queue_size: int | None = None, model_states: Callable[[], dict[str, str]] | None = None) -> None:
        self.registry = registry
        self._metered = metering is not None
        self.requests = Counter("wattserve_requests", "Inference requests answered, by outcome status class",
                                ["model", "task", "status"], registry=registry)
        self.duration = Histogram("wattserve_request_duration_seconds", "Inference wall time (queue excluded)",
                                  ["model", "task"], buckets=DURATION_BUCKETS_S, registry=registry)
        self.request_energy = Histogram("wattserve_request_energy_joules", "Final energy per request",
                                        ["model", "task"], buckets=ENERGY_BUCKETS_J, registry=registry)
        self.energy = Counter("wattserve_energy_joules", "Final per-request energy, summed, by component",
                              ["model", "task", "component"], registry=registry)
        self.emissions = Counter("wattserve_emissions_grams", "gCO2e of requests (operational or embodied)",
                                 ["model", "task", "scope"], registry=registry)
        self.tokens = Counter("wattserve_tokens", "Tokens processed", ["model", "direction"], registry=registry)
        registry.register(_LiveCollector(metering, queue_depth, queue_size, model_states))
        self._children: dict[tuple[str, str], tuple] = {}  # a model's energy series (final records)
        self._response_children: dict[tuple[str, str], tuple] = {}  # a model's response series
        # every series of every served model exists from the start at zero: rate() and increase() then count a
        # model's first requests too (a series born at its first increment loses that increment)
        for model, task in (models or {}).items():
            self._response_series(model, task)
            if metering is not None:
                self._series(model, task)

    def _response_series(self, model: str, task: str) -> tuple:
        children = self._response_children.get((model, task))
        if children is None:  # as _series: a model's series are resolved once
            children = self._response_children[(model, task)] = (
                {c: self.requests.labels(model, task, f"{c}xx") for c in (2, 4, 5)},
                self.duration.labels(model, task), self.tokens.labels(model, "input"),
                self.tokens.labels(model, "output"))
        return children

    def _series(self, model: str, task: str) -> tuple:
        children = self._children.get((model, task))
        if children is None:  # labels() costs microseconds each: resolve a model's series once
            labels = (model, task)
            children = self._children[labels] = (
                self.request_energy.labels(*labels),
                {str(c): self.energy.labels(*labels, str(c)) for c in Component},
                self.emissions.labels(*labels, "operational"), self.emissions.labels(*labels, "embodied"))
        return children

    def observe_final(self, record: EnergyRecord) -> None:
        """Called once per request when its final figure is known (from the sampler thread). Under metering, the
        duration histogram and the token counters are fed here too, from the same record: they then count exactly
        the requests the energy series count, those that ran, whatever they were answered (a 504 whose inference
        ran on, a model that failed mid-way), and joules per token read off /metrics are the records' own."""
        histogram, energy, operational, embodied = self._series(record.model, record.task)
        _, duration, tokens_input, tokens_output = self._response_series(record.model, record.task)
        histogram.observe(record.energy_j)
        duration.observe(record.duration_s)
        if record.tokens_in:
            tokens_input.inc(record.tokens_in)
        if record.tokens_out:
            tokens_output.inc(record.tokens_out)
        for component, figure in record.components.items():
            energy[component].inc(figure.figure_j(record.accounting))
        if record.carbon is not None:
            operational.inc(record.carbon.operational_g)
            embodied.inc(record.carbon.embodied_g)

    def observe_response(self, model: str, task: str, status: int, duration_s: float | None,
                         tokens_in: int = 0, tokens_out: int = 0) -> None:
        """Called once per response, on the event loop. Duration and tokens count here only without metering (with
        it, they come from the final record: see observe_final)."""
        requests, duration, tokens_input, tokens_output = self._response_series(model, task)
        status_class = status // 100
        counter = requests.get(status_class)
        if counter is None:
            counter = requests[status_class] = self.requests.labels(model, task, f"{status_class}xx")
        counter.inc()
        if self._metered:
            return
        if duration_s is not None:
            duration.observe(duration_s)
        if tokens_in:
            tokens_input.inc(tokens_in)
        if tokens_out:
            tokens_output.inc(tokens_out)


class _LiveCollector:
    """Values read at scrape time: device counters from the metering ledger, power, intensity, queues."""

    def __init__(self, metering: Metering | None, queue_depth: Callable[[], dict[str, int]],
                 queue_size: int | None, model_states: Callable[[], dict[str, str]] | None = None) -> None:
        self.metering, self.queue_depth, self.queue_size = metering, queue_depth, queue_size
        self.model_states = model_states

    def collect(self):
        if self.model_states is not None:  # a state set: one series per state, 1 for the model's current one
            state = GaugeMetricFamily("wattserve_model_state", "1 for each model's current state (loading, ready, "
                                      "failed), 0 for the others", labels=["model", "state"])
            for model, current in self.model_states().items():
                for name in MODEL_STATES:
                    state.add_metric([model, name], 1.0 if name == current else 0.0)
            yield state
        queue = GaugeMetricFamily("wattserve_queue_depth", "Requests waiting or running, per model", labels=["model"])
        size = GaugeMetricFamily("wattserve_queue_size", "Requests a model's queue holds before answering 429",
                                 labels=["model"])
        for model, depth in self.queue_depth().items():
            queue.add_metric([model], depth)
            if self.queue_size is not None:
                size.add_metric([model], self.queue_size)
        yield queue
        if self.queue_size is not None:
            yield size
        if self.metering is None:
            return
        device = CounterMetricFamily("wattserve_device_energy_joules", "Everything the meters measured, idle included",
                                     labels=["device", "component", "method"])
        idle = CounterMetricFamily("wattserve_idle_energy_joules",
                                   "Device energy not in any request's figure (idle while nothing ran; in marginal "
                                   "accounting also the idle share of requests)", labels=["device"])
        power = GaugeMetricFamily("wattserve_device_power_watts", "Power over the last metered interval",
                                  labels=["device"])
        covered = GaugeMetricFamily("wattserve_device_energy_timestamp_seconds",
                                    "Unix time up to which wattserve_device_energy_joules_total has counted",
                                    labels=["device"])
        wall_offset_s = time.time() - self.metering.clock()
        loaded = self.metering.accounting is Accounting.LOADED
        for dev_id, totals in self.metering.totals().items():
            info = self.metering.devices[dev_id]
            device.add_metric([dev_id, str(info.component), str(info.method)], totals.measured_j)
            idle.add_metric([dev_id], totals.unattributed_idle_j + (0.0 if loaded else totals.attributed_idle_j))
            power.add_metric([dev_id], totals.last_power_w)
            if totals.covered_until_s is not None:
                covered.add_metric([dev_id], totals.covered_until_s + wall_offset_s)
        yield device
        yield idle
        yield power
        yield covered
        intensity = GaugeMetricFamily("wattserve_grid_carbon_intensity_grams_per_kilowatt_hour",
                                      "Grid carbon intensity now", labels=["source"])
        carbon = self.metering.carbon
        intensity.add_metric([carbon.intensity.description], carbon.intensity.intensity_g_per_kwh(time.time()))
        yield intensity
