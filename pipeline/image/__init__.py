"""Decode, validate, filter and resize fetched images."""

from pipeline.image.config import ImageConfig
from pipeline.image.process import ImageProcessor, ImageRejected

__all__ = ["ImageConfig", "ImageProcessor", "ImageRejected"]
