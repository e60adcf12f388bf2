"""sk-deploy: a deployment toolkit for attention CNNs (SKNet, SENet)."""

__version__ = "0.1.0"
