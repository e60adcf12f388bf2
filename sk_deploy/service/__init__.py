"""The HTTP service: FastAPI + uvicorn, a micro-batcher in front of the Predictor, KServe v2, metrics."""
