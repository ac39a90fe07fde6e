"""The embedded demo web: a synthetic, deterministic little web of shape galleries, caption
lists and injected noise, served on 127.0.0.1, with exact ground truth.

    site = build_site(seed=0)
    with DemoWebServer(site) as server:
        crawl(server.index_url)
        truth = site.ground_truth.records(server.base_url)
"""

from lait.demo_web.generator import build_site
from lait.demo_web.ground_truth import GroundTruth, ImageReference, PageInfo
from lait.demo_web.noise import NoiseKind
from lait.demo_web.scenes import (
    COLOURS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    describe_scene,
    random_scene,
    render_scene,
)
from lait.demo_web.server import DemoWebServer, NonLoopbackHostError, serve
from lait.demo_web.site import DemoSite, Resource, SiteConfig
from lait.demo_web.translations import LANGUAGES, describe_scene_in

__all__ = [
    "COLOURS",
    "LANGUAGES",
    "SHAPES",
    "SIZES",
    "DemoSite",
    "DemoWebServer",
    "GroundTruth",
    "ImageReference",
    "NoiseKind",
    "NonLoopbackHostError",
    "PageInfo",
    "Resource",
    "Scene",
    "SceneObject",
    "SiteConfig",
    "build_site",
    "describe_scene",
    "describe_scene_in",
    "random_scene",
    "render_scene",
    "serve",
]
