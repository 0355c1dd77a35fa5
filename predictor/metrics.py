"""The predictor's own Prometheus metrics, beside KServe's (request latency per phase).

Registered in ``prometheus_client``'s default registry, which KServe's ``GET /metrics``
exposes, so one scrape gets both. Names follow TorchServe's metrics in meaning:
``StyleInferenceTime`` becomes ``style_request_seconds`` (labelled by model, runtime and
outcome) and the engine chosen per model is ``style_model_runtime``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Wide buckets: a thumbnail takes a fraction of a second, a tiled 16-megapixel photo minutes.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

LATENCY = Histogram("style_request_seconds", "Time to answer one inference request, from parsing to the "
                    "encoded painting", ["model", "runtime", "outcome"], buckets=BUCKETS)
REQUESTS = Counter("style_requests", "Inference requests by outcome (ok, input_error, overloaded, fault)",
                   ["model", "outcome"])
RUNTIME = Gauge("style_model_runtime", "1 for the engine each model runs on (backend/precision, chosen "
                "by measurement)", ["model", "runtime"])


def record(model: str, runtime: str, outcome: str, seconds: float) -> None:
    LATENCY.labels(model=model, runtime=runtime, outcome=outcome).observe(seconds)
    REQUESTS.labels(model=model, outcome=outcome).inc()
