"""The default object vocabulary for MOC labels of clip-grid regions.

COCO's 80 categories (the everyday objects web images show), plus plain shapes and
"background" so that empty patches have a class. A plan may give its own list.
"""

from __future__ import annotations

COCO_OBJECTS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "diamond", "hexagon", "cross",
)  # fmt: skip

DEFAULT_VOCABULARY: tuple[str, ...] = (*COCO_OBJECTS, *SHAPES, "background")
