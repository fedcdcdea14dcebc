"""Input sources behind one interface: MQTT request topic, watch folder, camera."""

from edge_agent.sources.base import (
    FanOut,
    JsonlSink,
    MessageLink,
    MqttSink,
    ResultSink,
    Source,
    infer_topic,
    results_topic,
)
from edge_agent.sources.camera import CameraSource, FrameSource, SyntheticFrames, open_frames
from edge_agent.sources.mqtt_requests import MqttRequestSource
from edge_agent.sources.watch import WatchFolderSource

__all__ = ["CameraSource", "FanOut", "FrameSource", "JsonlSink", "MessageLink",
           "MqttRequestSource", "MqttSink", "ResultSink", "Source", "SyntheticFrames",
           "WatchFolderSource", "infer_topic", "open_frames", "results_topic"]
