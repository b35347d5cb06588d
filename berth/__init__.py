"""berth: provision GitLab Runner hosts that build Docker images."""

__version__ = "0.1.0"
