"""Home Assistant MQTT discovery (opt-in ``[homeassistant]``): docs/homeassistant.md."""
