"""Local serving: TensorFlow-Serving-compatible REST on a small stdlib HTTP server."""

from edge_agent.serving.admission import Admission, Overloaded
from edge_agent.serving.api import ServingApi
from edge_agent.serving.http import HttpServer, HTTPStatusError, Request, Response
from edge_agent.serving.metrics import Metrics

__all__ = ["Admission", "HTTPStatusError", "HttpServer", "Metrics", "Overloaded", "Request",
           "Response", "ServingApi"]
