"""The wattserve overview dashboard as code (grafana-foundation-sdk): power, energy per inference, carbon, traffic.

``make dashboards`` writes it to grafana/dashboards/wattserve-overview.json; never edit that file by hand (a test
compares it with this source). Every query is run against a real Prometheus scraping a real wattserve by
tests/deploy/test_live_observability.py.
"""

from __future__ import annotations

import itertools

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

# = grafana/provisioning/datasources/prometheus.yaml: a fixed uid, so the dashboard needs no datasource picker
DATASOURCE = DataSourceRef(type_val="prometheus", uid="wattserve-prometheus")
UID = "wattserve-overview"

INSTANCE = 'instance=~"$instance"'
MODEL_TASK = 'model=~"$model", task=~"$task", instance=~"$instance"'  # per-model panels follow the instance picker
RATE = "[$__rate_interval]"
RANGE = "[$__range]"  # the dashboard's whole time range: the table and the totals
J_PER_KWH = "3.6e6"  # joules in a kilowatt hour


def query(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False,
          table_format: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE).legend_format(legend or "__auto")
    if instant:
        q = q.instant()
    if table_format:
        q = q.format(PromQueryFormat.TABLE)
    return q


def _series(title: str, unit: str, description: str, targets: list[prometheus.Dataquery], *,
            stacked: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .targets(targets).span(12).height(8).fill_opacity(10 if not stacked else 40)
             .legend(common_builders.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                     .placement(common.LegendPlacement.BOTTOM).show_legend(True).calcs(["mean", "max"]))
             .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                      .sort(common.SortOrder.DESCENDING)))
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    return panel


def _stat(title: str, unit: str, description: str, target: prometheus.Dataquery, *,
          thresholds: list[Threshold] | None = None) -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .with_target(target).span(6).height(4).graph_mode(common.BigValueGraphMode.NONE)
             .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    if thresholds:
        panel = panel.thresholds(dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(thresholds))
    return panel


def power_panels() -> list:
    device_w = f"sum by (instance) (rate(wattserve_device_energy_joules_total{{{INSTANCE}}}{RATE}))"
    idle_w = f"sum by (instance) (rate(wattserve_idle_energy_joules_total{{{INSTANCE}}}{RATE}))"
    return [
        _series("Power per device", "watt",
                "Rate of each device's energy counter: everything its meter measured, idle included (NVML and RAPL "
                "measure; without sensors CPU and RAM are estimated, see the method label).",
                [query(f"sum by (instance, device) (rate(wattserve_device_energy_joules_total{{{INSTANCE}}}{RATE}))",
                       "{{instance}} {{device}}")]),
        _series("Active vs idle power", "watt",
                "Active: energy in some request's figure (under loaded accounting it includes the idle draw shared "
                "by requests while they ran). Idle: energy in no request's figure.",
                [query(f"{device_w} - {idle_w}", "{{instance}} active (in requests)"),
                 query(idle_w, "{{instance}} idle", ref="B")], stacked=True),
        _series("Power drawn by each model's requests", "watt",
                "Final per-request energy of each model, summed per second.",
                [query(f"sum by (model, task) (rate(wattserve_energy_joules_total{{{MODEL_TASK}}}{RATE}))",
                       "{{model}} ({{task}})")], stacked=True),
        _series("Energy per request (p50, p95)", "joule",
                "From the wattserve_request_energy_joules histogram: interpolated within its buckets (0.01 J to "
                "3 kJ, about x3 apart), so read it as an estimate; the table below has exact means.",
                [query(f"histogram_quantile({q}, sum by (model, le) "
                       f"(rate(wattserve_request_energy_joules_bucket{{{MODEL_TASK}}}{RATE})))",
                       f"{{{{model}}}} p{round(q * 100)}", ref=ref) for q, ref in ((0.5, "A"), (0.95, "B"))]),
    ]


def per_inference_table() -> table.Panel:
    """The paper's table (kWh and gCO2e per 1,000 inferences, by model and task), live over the time range."""
    inferences = f"sum by (model, task) (increase(wattserve_request_energy_joules_count{{{MODEL_TASK}}}{RANGE}))"
    joules = f"sum by (model, task) (increase(wattserve_energy_joules_total{{{MODEL_TASK}}}{RANGE}))"
    grams = f"sum by (model, task) (increase(wattserve_emissions_grams_total{{{MODEL_TASK}}}{RANGE}))"
    columns = [  # (ref, expr, column name, unit)
        ("A", inferences, "inferences", "short"),
        ("B", f"{joules} / {inferences}", "J per inference", "joule"),
        ("C", f"{joules} / {inferences} * 1000", "energy per 1,000 inferences", "joule"),
        ("D", f"{joules} / {inferences} * 1000 / {J_PER_KWH}", "kWh per 1,000 inferences", "kwatth"),
        ("E", f"{grams} / {inferences} * 1000", "gCO2e per 1,000 inferences", "massg"),
    ]
    panel = (table.Panel().title("Energy and carbon per 1,000 inferences (Power Hungry Processing, live)")
             .description("Over the dashboard's time range, from the final figures of the requests in it: the "
                          "table of Luccioni et al. (2024), 'Power Hungry Processing', for the models served here. "
                          "Energy under the server's accounting (loaded by default: active plus the idle draw "
                          "shared while requests ran); gCO2e operational plus embodied.")
             .unit("short").datasource(DATASOURCE).span(24).height(8).show_header(True)
             .targets([query(expr, ref=ref, instant=True, table_format=True) for ref, expr, _, _ in columns])
             .with_transformation(DataTransformerConfig(id_val="merge", options={}))
             .with_transformation(DataTransformerConfig(id_val="organize", options={
                 "excludeByName": {"Time": True}, "indexByName": {"model": 0, "task": 1}}))
             .sort_by([common_builders.TableSortByFieldState().display_name("kWh per 1,000 inferences")
                       .desc(True)]))
    for ref, _, name, unit in columns:
        panel = panel.override_by_name(f"Value #{ref}", [DynamicConfigValue(id_val="displayName", value=name),
                                                         DynamicConfigValue(id_val="unit", value=unit)])
    return panel


def summary_panels() -> list:
    burn = "job:wattserve_emissions_budget_burn_rate:ratio_rate1h"
    return [
        _stat("gCO2e in range", "massg", "gCO2e of the selected models' requests over the time range.",
              query(f"sum(increase(wattserve_emissions_grams_total{{{MODEL_TASK}}}{RANGE}))", instant=True)),
        _stat("Energy in range", "kwatth", "Everything the meters measured over the time range, idle included.",
              query(f"sum(increase(wattserve_device_energy_joules_total{{{INSTANCE}}}{RANGE})) / {J_PER_KWH}",
                    instant=True)),
        _stat("Carbon budget burn rate (1h)", "suffix:x",
              "gCO2e over the last hour against the daily budget in the recording rules (1: the budget lasts a "
              "day; the slow-burn alert fires above 2 for 6 hours, the fast-burn alert above 6 for 1 hour).",
              query(burn, "{{job}}", instant=True),
              thresholds=[Threshold(value=None, color="green"), Threshold(value=2, color="orange"),
                          Threshold(value=6, color="red")]),
        _stat("Idle share of energy (5m)", "percentunit",
              "Energy in no request's figure over all the energy measured (recording rule, 5 minutes).",
              query(f"instance:wattserve_idle_energy_per_device_energy:ratio_rate5m{{{INSTANCE}}}", "{{instance}}",
                    instant=True)),
    ]


def carbon_panels() -> list:
    return [
        _series("gCO2e rate by model", "si:g/h",
                "Operational plus embodied gCO2e of each model's requests, per hour.",
                [query(f"sum by (model, task) (rate(wattserve_emissions_grams_total{{{MODEL_TASK}}}{RATE})) * 3600",
                       "{{model}} ({{task}})")], stacked=True),
        _series("Grid carbon intensity", "suffix: gCO2e/kWh",
                "The intensity the server applies now (a constant, CodeCarbon's data for a region, or a time series).",
                [query(f"max by (instance, source) "
                       f"(wattserve_grid_carbon_intensity_grams_per_kilowatt_hour{{{INSTANCE}}})",
                       "{{instance}} {{source}}")]),
    ]


def traffic_panels() -> list:
    total = f"sum by (model) (rate(wattserve_requests_total{{{MODEL_TASK}}}{RATE}))"
    return [
        _series("Requests per second", "reqps", "Inference requests answered, by status class.",
                [query(f"sum by (model, status) (rate(wattserve_requests_total{{{MODEL_TASK}}}{RATE}))",
                       "{{model}} {{status}}")]),
        _series("Latency (p50, p95)", "s", "Inference wall time, queue excluded.",
                [query(f"histogram_quantile({q}, sum by (model, le) "
                       f"(rate(wattserve_request_duration_seconds_bucket{{{MODEL_TASK}}}{RATE})))",
                       f"{{{{model}}}} p{round(q * 100)}", ref=ref) for q, ref in ((0.5, "A"), (0.95, "B"))]),
        _series("Queue depth", "short",
                "Requests waiting or running per model; at the queue size the server answers 429.",
                [query(f'max by (instance, model) (wattserve_queue_depth{{model=~"$model", {INSTANCE}}})',
                       "{{instance}} {{model}}"),
                 query(f'max by (instance, model) (wattserve_queue_size{{model=~"$model", {INSTANCE}}})',
                       "{{instance}} {{model}} queue size (429 above)", ref="B")]),
        _series("Error ratio", "percentunit",
                "Share of requests answered 4xx (client errors, 429 included) and 5xx (server errors, timeouts).",
                [query(f'sum by (model, status) (rate(wattserve_requests_total{{status=~"4xx|5xx", {MODEL_TASK}}}'
                       f"{RATE})) / ignoring (status) group_left () {total}", "{{model}} {{status}}")])
        .no_value("0"),
        _series("Models not serving", "short",
                "1 while a model is loading (models load in the background after start-up) or has failed to load "
                "(its requests get 503; GET /v1/models/<name> says which, with the error); 0 while it serves.",
                [query(f'sum by (instance, model) (wattserve_model_state{{state!="ready", model=~"$model", '
                       f"{INSTANCE}}})", "{{instance}} {{model}}")])
        .no_value("0"),
    ]


def variables() -> list[dashboard.QueryVariable]:
    def variable(name: str, label: str, query_expr: str) -> dashboard.QueryVariable:
        return (dashboard.QueryVariable(name).label(label).datasource(DATASOURCE).query(query_expr)
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
                .multi(True).include_all(True).current(VariableOption(selected=True, text="All", value="$__all")))

    # wattserve_queue_depth exists for every served model from start-up, before any request
    return [variable("instance", "instance", "label_values(wattserve_queue_depth, instance)"),
            variable("model", "model", 'label_values(wattserve_queue_depth{instance=~"$instance"}, model)'),
            variable("task", "task", 'label_values(wattserve_requests_total{model=~"$model"}, task)')]


def build() -> dashboard.Dashboard:
    builder = (dashboard.Dashboard("wattserve: energy and carbon").uid(UID)
               .description("Power per device, energy and gCO2e per inference by model and task, traffic and "
                            "errors of wattserve, from its Prometheus metrics and recording rules.")
               .tags(["wattserve", "energy", "carbon"]).refresh("30s").time("now-1h", "now").timezone("browser")
               .tooltip(DashboardCursorSync.CROSSHAIR).variables(variables()))
    ids = itertools.count(1)
    for title, panels in (("Summary", summary_panels()),
                          ("Power and energy", power_panels()),
                          ("Per inference", [per_inference_table()]),
                          ("Carbon", carbon_panels()),
                          ("Traffic", traffic_panels())):
        builder = builder.with_row(dashboard.Row(title).id(next(ids)))
        for panel in panels:
            builder = builder.with_panel(panel.id(next(ids)))
    return builder

