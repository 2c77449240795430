"""``GET /metrics``: the service's counters in Prometheus' text format (prometheus_client).

Per camera: frames read, identified and dropped, faces, events, reconnections, whether it runs, and
the time to identify a frame (a summary: count and sum). Per route: HTTP requests by status and their
latency (a histogram). Besides: people enrolled, events stored and open, and each sink's messages
sent, failed and dropped. Camera and store figures are read when scraped, so they are never stale.
"""

from __future__ import annotations

from typing import Any

from faceid.extras import require_all

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The registry of one service: request metrics observed by the app, the rest collected live."""

    def __init__(self, service: Any):
        require_all(["prometheus_client"], "faceid serve's /metrics")
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("faceid_http_requests", "HTTP requests by method, route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("faceid_http_request_seconds", "HTTP request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_ServiceCollector(service))

    def observe_request(self, request: Any, status: int, seconds: float) -> None:
        """One answered request; the route is its template (``/events/{event_id}``), never the path."""
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        self.requests.labels(request.method, template, str(status)).inc()
        self.latency.labels(template).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _ServiceCollector:
    """Reads the cameras, the store and the sinks at each scrape."""

    def __init__(self, service: Any):
        self.service = service

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        service = self.service
        with service._cameras_lock:
            cameras = list(service.cameras.values())
        counters = {
            "frames_read": "frames read from the source",
            "frames_processed": "frames identified",
            "frames_dropped": "frames dropped because identification was still busy with an earlier one",
            "faces": "faces identified (one per face per identified frame)",
            "reconnects": "times the source was opened again after a failure",
        }
        for field, text in counters.items():
            family = CounterMetricFamily(f"faceid_camera_{field}", f"Per camera: {text}", labels=["camera"])
            for camera in cameras:
                family.add_metric([camera.name], getattr(camera.stats, field))
            yield family
        events = CounterMetricFamily("faceid_camera_events", "Per camera: events created since start",
                                     labels=["camera"])
        up = GaugeMetricFamily("faceid_camera_up", "Per camera: 1 while it runs, 0 otherwise", labels=["camera"])
        seconds = SummaryMetricFamily("faceid_camera_frame_seconds", "Per camera: time to identify a frame",
                                      labels=["camera"])
        for camera in cameras:
            events.add_metric([camera.name], service.events.created.get(camera.name, 0))
            up.add_metric([camera.name], 1.0 if camera.state == "running" else 0.0)
            seconds.add_metric([camera.name], count_value=camera.stats.frames_processed,
                               sum_value=camera.stats.processing_seconds)
        yield from (events, up, seconds)
        counts = service.store.counts()
        with service.people_lock:
            people = len(service.faceid.people)
        yield GaugeMetricFamily("faceid_people", "People enrolled", value=people)
        yield GaugeMetricFamily("faceid_events_stored", "Events in the store", value=counts["events"])
        yield GaugeMetricFamily("faceid_events_open", "Events whose track goes on", value=counts["open_events"])
        for field in ("sent", "failed", "dropped"):
            family = CounterMetricFamily(f"faceid_sink_{field}", f"Messages {field} per sink", labels=["sink"])
            for sink in service.sinks:
                family.add_metric([type(sink).__name__], getattr(sink, field, 0))
            yield family
