"""Captions of a scene in languages other than English: real, grammatical translations.

The demo web's non-English captions must be true descriptions of their images (so a language
filter, not a relevance filter, is what should catch them), and must read as natural text to
a language identifier. Each language builds a noun phrase per object (with gender and case
agreement where the language has them) and joins phrases with its own spatial wording.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from lait.demo_web.scenes import Scene, SceneObject

LANGUAGES: tuple[str, ...] = ("de", "fr", "es", "ja", "zh")

# --- German: indefinite article + strong/mixed adjective endings by gender and case -------

_DE_NOUNS = {
    "circle": ("Kreis", "m"),
    "square": ("Quadrat", "n"),
    "triangle": ("Dreieck", "n"),
    "star": ("Stern", "m"),
    "diamond": ("Raute", "f"),
    "hexagon": ("Sechseck", "n"),
    "cross": ("Kreuz", "n"),
}
_DE_COLOURS = {
    "red": "rot",
    "orange": "orangefarben",
    "yellow": "gelb",
    "green": "grün",
    "blue": "blau",
    "purple": "violett",
    "pink": "rosafarben",
    "brown": "braun",
    "black": "schwarz",
    "cyan": "türkis",
}
_DE_SIZES = {"small": "klein", "large": "groß"}


def _de_phrase(obj: SceneObject, dative: bool = False) -> str:
    noun, gender = _DE_NOUNS[obj.shape]
    size, colour = _DE_SIZES[obj.size], _DE_COLOURS[obj.colour]
    if dative:
        article = "einer" if gender == "f" else "einem"
        ending = "en"
    else:
        article = "eine" if gender == "f" else "ein"
        ending = {"m": "er", "n": "es", "f": "e"}[gender]
    return f"{article} {size}{ending} {colour}{ending} {noun}"


def _de(scene: Scene, rng: random.Random) -> str:
    objs = scene.objects
    if len(objs) == 1:
        return rng.choice(("{a}", "{a} auf einem einfarbigen Hintergrund")).format(
            a=_de_phrase(objs[0])
        )
    if len(objs) == 3:
        order = "von links nach rechts" if scene.layout == "horizontal" else "von oben nach unten"
        a, b, c = (_de_phrase(o) for o in objs)
        return f"{a}, {b} und {c} {order}"
    first, second = objs
    if scene.layout == "horizontal":
        if rng.random() < 0.5:
            return f"{_de_phrase(first)} links von {_de_phrase(second, dative=True)}"
        return f"{_de_phrase(second)} rechts von {_de_phrase(first, dative=True)}"
    if rng.random() < 0.5:
        return f"{_de_phrase(first)} über {_de_phrase(second, dative=True)}"
    return f"{_de_phrase(second)} unter {_de_phrase(first, dative=True)}"


# --- French: size before the noun, colour after, both agreeing in gender ----------------

_FR_NOUNS = {
    "circle": ("cercle", "m"),
    "square": ("carré", "m"),
    "triangle": ("triangle", "m"),
    "star": ("étoile", "f"),
    "diamond": ("losange", "m"),
    "hexagon": ("hexagone", "m"),
    "cross": ("croix", "f"),
}
_FR_COLOURS = {
    "red": ("rouge", "rouge"),
    "orange": ("orange", "orange"),
    "yellow": ("jaune", "jaune"),
    "green": ("vert", "verte"),
    "blue": ("bleu", "bleue"),
    "purple": ("violet", "violette"),
    "pink": ("rose", "rose"),
    "brown": ("marron", "marron"),
    "black": ("noir", "noire"),
    "cyan": ("cyan", "cyan"),
}
_FR_SIZES = {"small": ("petit", "petite"), "large": ("grand", "grande")}


def _fr_phrase(obj: SceneObject) -> str:
    noun, gender = _FR_NOUNS[obj.shape]
    form = 0 if gender == "m" else 1
    article = ("un", "une")[form]
    return f"{article} {_FR_SIZES[obj.size][form]} {noun} {_FR_COLOURS[obj.colour][form]}"


def _fr_of(phrase: str) -> str:
    """'de' + an indefinite noun phrase, elided as French requires ("d'un", "d'une")."""
    return "d'" + phrase


def _fr(scene: Scene, rng: random.Random) -> str:
    objs = scene.objects
    if len(objs) == 1:
        return rng.choice(("{a}", "{a} sur un fond uni")).format(a=_fr_phrase(objs[0]))
    if len(objs) == 3:
        order = "de gauche à droite" if scene.layout == "horizontal" else "de haut en bas"
        a, b, c = (_fr_phrase(o) for o in objs)
        return f"{a}, {b} et {c} {order}"
    first, second = objs
    if scene.layout == "horizontal":
        if rng.random() < 0.5:
            return f"{_fr_phrase(first)} à gauche {_fr_of(_fr_phrase(second))}"
        return f"{_fr_phrase(second)} à droite {_fr_of(_fr_phrase(first))}"
    if rng.random() < 0.5:
        return f"{_fr_phrase(first)} au-dessus {_fr_of(_fr_phrase(second))}"
    return f"{_fr_phrase(second)} sous {_fr_phrase(first)}"


# --- Spanish: noun, then colour, then size, agreeing in gender ---------------------------

_ES_NOUNS = {
    "circle": ("círculo", "m"),
    "square": ("cuadrado", "m"),
    "triangle": ("triángulo", "m"),
    "star": ("estrella", "f"),
    "diamond": ("rombo", "m"),
    "hexagon": ("hexágono", "m"),
    "cross": ("cruz", "f"),
}
_ES_COLOURS = {
    "red": ("rojo", "roja"),
    "orange": ("naranja", "naranja"),
    "yellow": ("amarillo", "amarilla"),
    "green": ("verde", "verde"),
    "blue": ("azul", "azul"),
    "purple": ("morado", "morada"),
    "pink": ("rosa", "rosa"),
    "brown": ("marrón", "marrón"),
    "black": ("negro", "negra"),
    "cyan": ("cian", "cian"),
}
_ES_SIZES = {"small": ("pequeño", "pequeña"), "large": ("grande", "grande")}


def _es_phrase(obj: SceneObject) -> str:
    noun, gender = _ES_NOUNS[obj.shape]
    form = 0 if gender == "m" else 1
    article = ("un", "una")[form]
    return f"{article} {noun} {_ES_COLOURS[obj.colour][form]} {_ES_SIZES[obj.size][form]}"


def _es(scene: Scene, rng: random.Random) -> str:
    objs = scene.objects
    if len(objs) == 1:
        return rng.choice(("{a}", "{a} sobre un fondo liso")).format(a=_es_phrase(objs[0]))
    if len(objs) == 3:
        order = "de izquierda a derecha" if scene.layout == "horizontal" else "de arriba abajo"
        a, b, c = (_es_phrase(o) for o in objs)
        return f"{a}, {b} y {c} {order}"
    first, second = objs
    if scene.layout == "horizontal":
        if rng.random() < 0.5:
            return f"{_es_phrase(first)} a la izquierda de {_es_phrase(second)}"
        return f"{_es_phrase(second)} a la derecha de {_es_phrase(first)}"
    if rng.random() < 0.5:
        return f"{_es_phrase(first)} encima de {_es_phrase(second)}"
    return f"{_es_phrase(second)} debajo de {_es_phrase(first)}"


# --- Japanese: size + colour + shape; relations as "B の左にある A" ---------------------

_JA_NOUNS = {
    "circle": "円",
    "square": "正方形",
    "triangle": "三角形",
    "star": "星",
    "diamond": "ひし形",
    "hexagon": "六角形",
    "cross": "十字",
}
_JA_COLOURS = {
    "red": "赤い",
    "orange": "オレンジ色の",
    "yellow": "黄色い",
    "green": "緑の",
    "blue": "青い",
    "purple": "紫の",
    "pink": "ピンクの",
    "brown": "茶色の",
    "black": "黒い",
    "cyan": "水色の",
}
_JA_SIZES = {"small": "小さな", "large": "大きな"}


def _ja_phrase(obj: SceneObject) -> str:
    return f"{_JA_SIZES[obj.size]}{_JA_COLOURS[obj.colour]}{_JA_NOUNS[obj.shape]}"


def _ja(scene: Scene, rng: random.Random) -> str:
    objs = scene.objects
    if len(objs) == 1:
        return rng.choice(("{a}", "無地の背景に置かれた{a}")).format(a=_ja_phrase(objs[0]))
    if len(objs) == 3:
        order = "左から順に" if scene.layout == "horizontal" else "上から順に"
        a, b, c = (_ja_phrase(o) for o in objs)
        return f"{order}{a}、{b}、{c}"
    first, second = objs
    if scene.layout == "horizontal":
        if rng.random() < 0.5:
            return f"{_ja_phrase(second)}の左にある{_ja_phrase(first)}"
        return f"{_ja_phrase(first)}の右にある{_ja_phrase(second)}"
    if rng.random() < 0.5:
        return f"{_ja_phrase(second)}の上にある{_ja_phrase(first)}"
    return f"{_ja_phrase(first)}の下にある{_ja_phrase(second)}"


# --- Chinese: 一个 + colour 的 + size + shape; relations as "A 在 B 的左边" ---------------

_ZH_NOUNS = {
    "circle": "圆形",
    "square": "正方形",
    "triangle": "三角形",
    "star": "星形",
    "diamond": "菱形",
    "hexagon": "六边形",
    "cross": "十字形",
}
_ZH_COLOURS = {
    "red": "红色",
    "orange": "橙色",
    "yellow": "黄色",
    "green": "绿色",
    "blue": "蓝色",
    "purple": "紫色",
    "pink": "粉色",
    "brown": "棕色",
    "black": "黑色",
    "cyan": "青色",
}
_ZH_SIZES = {"small": "小", "large": "大"}


def _zh_phrase(obj: SceneObject) -> str:
    return f"一个{_ZH_COLOURS[obj.colour]}的{_ZH_SIZES[obj.size]}{_ZH_NOUNS[obj.shape]}"


def _zh(scene: Scene, rng: random.Random) -> str:
    objs = scene.objects
    if len(objs) == 1:
        return rng.choice(("{a}", "纯色背景上的{a}")).format(a=_zh_phrase(objs[0]))
    if len(objs) == 3:
        order = "从左到右" if scene.layout == "horizontal" else "从上到下"
        a, b, c = (_zh_phrase(o) for o in objs)
        return f"{order}依次是{a}、{b}和{c}"
    first, second = objs
    if scene.layout == "horizontal":
        if rng.random() < 0.5:
            return f"{_zh_phrase(first)}在{_zh_phrase(second)}的左边"
        return f"{_zh_phrase(second)}在{_zh_phrase(first)}的右边"
    if rng.random() < 0.5:
        return f"{_zh_phrase(first)}在{_zh_phrase(second)}的上方"
    return f"{_zh_phrase(second)}在{_zh_phrase(first)}的下方"


_DESCRIBERS: dict[str, Callable[[Scene, random.Random], str]] = {
    "de": _de,
    "fr": _fr,
    "es": _es,
    "ja": _ja,
    "zh": _zh,
}


def describe_scene_in(scene: Scene, language: str, rng: random.Random) -> str:
    """A caption true of `scene` in `language` (one of `LANGUAGES`, ISO 639-1 codes)."""
    try:
        describer = _DESCRIBERS[language]
    except KeyError:
        raise ValueError(
            f"no captions in language {language!r}; choose one of {', '.join(LANGUAGES)}"
        ) from None
    return describer(scene, rng)
