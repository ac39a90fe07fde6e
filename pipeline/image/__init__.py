"""Decode, validate, filter and resize fetched images."""

from pipeline.image.process import ImageProcessor, ImageRejected

__all__ = ["ImageProcessor", "ImageRejected"]
