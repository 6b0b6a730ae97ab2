"""The appliance: a local Ultralytics Platform."""

__version__ = "0.1.0"
