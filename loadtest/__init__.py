"""Campaigns: replay 1,000-sample datasets against wattserve with Locust, the way "Power Hungry Processing"
(Luccioni, Jernite, Strubell, FAccT 2024) measured, and report kWh and gCO2e per 1,000 inferences.

Modules: ``datasets`` (sources and the deterministic selection), ``mapping`` (a dataset row -> a task request),
``spec`` (the campaign file), ``server`` (talking to wattserve: models, finals, device counters; the embedded
server), ``accounting`` (the three accounting modes), ``replay`` (the Locust users and one run; imports locust,
which monkey-patches the process with gevent), ``campaign`` (the plan, resume, progress), ``report``.
"""
