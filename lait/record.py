"""The one record type that flows through the pipeline, and the reasons a record is dropped.

A `Record` starts as a candidate (an image URL with a caption, found on a page or in a list),
gains image bytes and measurements as stages run, and ends either accepted (written to a
shard) or rejected (written to the rejects ledger with its stage and reason). Records are
immutable; stages derive new ones with `dataclasses.replace` (see `Record.rejected`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from enum import StrEnum
from typing import Any

# The namespace of every counter and distribution a job reports (`lait.<stage>.<reason>` in the
# Dataflow console); pipeline/ and dedupe/ both count under it.
NAMESPACE = "lait"


class CaptionSource(StrEnum):
    """Where a candidate's caption came from."""

    ALT = "alt"
    TITLE = "title"
    SURROUNDING = "surrounding"
    LIST = "list"


class Status(StrEnum):
    """Where a record stands: still moving through the pipeline, or settled."""

    CANDIDATE = "candidate"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Stage(StrEnum):
    """Pipeline stages, in the order a candidate meets them (the funnel's order)."""

    EXTRACT = "extract"
    TEXT_FILTER = "text_filter"
    LANGUAGE = "language"
    FETCH = "fetch"
    DECODE = "decode"
    IMAGE_FILTER = "image_filter"
    CLIP = "clip"
    DEDUPE = "dedupe"


class RejectReason(StrEnum):
    """Every reason a candidate can be dropped. Each belongs to exactly one `Stage`."""

    # extract: what a page or list offered that is not a usable candidate
    MALFORMED_ROW = "malformed_row"
    INVALID_URL = "invalid_url"
    DATA_URI = "data_uri"
    TRACKING_PIXEL = "tracking_pixel"
    ICON = "icon"
    NO_CAPTION = "no_caption"
    # the page offered more images than `fetch.max_images_per_page`: the rest are not fetched
    OVER_PAGE_CAP = "over_page_cap"
    # text filters (cheap, before any download)
    UNDECODABLE_TEXT = "undecodable_text"
    CAPTION_TOO_SHORT = "caption_too_short"
    CAPTION_TOO_LONG = "caption_too_long"
    FILENAME_CAPTION = "filename_caption"
    URL_CAPTION = "url_caption"
    BOILERPLATE_CAPTION = "boilerplate_caption"
    HIGH_OOV_RATE = "high_oov_rate"
    CAPTION_SHARED_TOO_OFTEN = "caption_shared_too_often"
    # language identification
    WRONG_LANGUAGE = "wrong_language"
    LOW_LANGUAGE_CONFIDENCE = "low_language_confidence"
    # fetch
    UNSUPPORTED_SCHEME = "unsupported_scheme"
    DNS_FAILURE = "dns_failure"
    BLOCKED_ADDRESS = "blocked_address"
    CONNECTION_ERROR = "connection_error"
    TIMEOUT = "timeout"
    HTTP_NOT_FOUND = "http_not_found"
    HTTP_CLIENT_ERROR = "http_client_error"
    HTTP_SERVER_ERROR = "http_server_error"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    REDIRECT_LOOP = "redirect_loop"
    TOO_MANY_BYTES = "too_many_bytes"
    WRONG_CONTENT_TYPE = "wrong_content_type"
    ROBOTS_TXT_DISALLOWED = "robots_txt_disallowed"
    X_ROBOTS_TAG_OPT_OUT = "x_robots_tag_opt_out"
    # the page's <meta name="robots"> (or one naming our user agent) says noai / noimageai
    META_ROBOTS_OPT_OUT = "meta_robots_opt_out"
    # the image's host had spent its job-wide budget (`fetch.max_fetches_per_host`,
    # `fetch.max_seconds_per_host`): not fetched
    OVER_HOST_BUDGET = "over_host_budget"
    # decode
    UNDECODABLE_IMAGE = "undecodable_image"
    TRUNCATED_IMAGE = "truncated_image"
    DECOMPRESSION_BOMB = "decompression_bomb"
    # image filters
    TOO_SMALL = "too_small"
    BAD_ASPECT_RATIO = "bad_aspect_ratio"
    TOO_FEW_BYTES = "too_few_bytes"
    # CLIP scoring, the content heads on its image embedding, LAIT's best-caption aggregation
    LOW_CLIP_SCORE = "low_clip_score"
    NONNATURAL_IMAGE = "nonnatural_image"  # a chart, screenshot, slide, logo or text banner
    UNSAFE_IMAGE = "unsafe_image"  # the unsafe (NSFW) head scored it above its threshold
    WATERMARKED_IMAGE = "watermarked_image"
    NOT_BEST_CAPTION = "not_best_caption"
    # dedupe and decontamination
    DUPLICATE_EXACT = "duplicate_exact"
    DUPLICATE_URL = "duplicate_url"
    DUPLICATE_URL_CAPTION = "duplicate_url_caption"
    DUPLICATE_PERCEPTUAL = "duplicate_perceptual"
    DUPLICATE_CAPTION = "duplicate_caption"
    DUPLICATE_SEMANTIC = "duplicate_semantic"
    EVAL_CONTAMINATION = "eval_contamination"

    @property
    def stage(self) -> Stage:
        """The stage that gives this reason."""
        return _STAGE_OF_REASON[self]


def _reasons_by_stage() -> dict[RejectReason, Stage]:
    r = RejectReason
    groups: dict[Stage, tuple[RejectReason, ...]] = {
        Stage.EXTRACT: (
            r.MALFORMED_ROW,
            r.INVALID_URL,
            r.DATA_URI,
            r.TRACKING_PIXEL,
            r.ICON,
            r.NO_CAPTION,
            r.OVER_PAGE_CAP,
        ),
        Stage.TEXT_FILTER: (
            r.UNDECODABLE_TEXT,
            r.CAPTION_TOO_SHORT,
            r.CAPTION_TOO_LONG,
            r.FILENAME_CAPTION,
            r.URL_CAPTION,
            r.BOILERPLATE_CAPTION,
            r.HIGH_OOV_RATE,
            r.CAPTION_SHARED_TOO_OFTEN,
        ),
        Stage.LANGUAGE: (r.WRONG_LANGUAGE, r.LOW_LANGUAGE_CONFIDENCE),
        Stage.FETCH: (
            r.UNSUPPORTED_SCHEME,
            r.DNS_FAILURE,
            r.BLOCKED_ADDRESS,
            r.CONNECTION_ERROR,
            r.TIMEOUT,
            r.HTTP_NOT_FOUND,
            r.HTTP_CLIENT_ERROR,
            r.HTTP_SERVER_ERROR,
            r.TOO_MANY_REDIRECTS,
            r.REDIRECT_LOOP,
            r.TOO_MANY_BYTES,
            r.WRONG_CONTENT_TYPE,
            r.ROBOTS_TXT_DISALLOWED,
            r.X_ROBOTS_TAG_OPT_OUT,
            r.META_ROBOTS_OPT_OUT,
            r.OVER_HOST_BUDGET,
        ),
        Stage.DECODE: (r.UNDECODABLE_IMAGE, r.TRUNCATED_IMAGE, r.DECOMPRESSION_BOMB),
        Stage.IMAGE_FILTER: (r.TOO_SMALL, r.BAD_ASPECT_RATIO, r.TOO_FEW_BYTES),
        Stage.CLIP: (
            r.LOW_CLIP_SCORE,
            r.NONNATURAL_IMAGE,
            r.UNSAFE_IMAGE,
            r.WATERMARKED_IMAGE,
            r.NOT_BEST_CAPTION,
        ),
        Stage.DEDUPE: (
            r.DUPLICATE_EXACT,
            r.DUPLICATE_URL,
            r.DUPLICATE_URL_CAPTION,
            r.DUPLICATE_PERCEPTUAL,
            r.DUPLICATE_CAPTION,
            r.DUPLICATE_SEMANTIC,
            r.EVAL_CONTAMINATION,
        ),
    }
    return {reason: stage for stage, reasons in groups.items() for reason in reasons}


_STAGE_OF_REASON = _reasons_by_stage()


class Img2datasetStatus(StrEnum):
    """The `status` values img2dataset writes per sample."""

    SUCCESS = "success"
    FAILED_TO_DOWNLOAD = "failed_to_download"
    FAILED_TO_RESIZE = "failed_to_resize"


# img2dataset counts a row `failed_to_download` when it never got image bytes, and
# `failed_to_resize` when the bytes came but its resizer dropped them (undecodable, too
# small, bad aspect ratio): every check after the download. So a reject maps by whether the
# image had been downloaded when its stage dropped it.
_IMG2DATASET_STATUS_OF_STAGE: dict[Stage, Img2datasetStatus] = {
    Stage.EXTRACT: Img2datasetStatus.FAILED_TO_DOWNLOAD,
    Stage.TEXT_FILTER: Img2datasetStatus.FAILED_TO_DOWNLOAD,
    Stage.LANGUAGE: Img2datasetStatus.FAILED_TO_DOWNLOAD,
    Stage.FETCH: Img2datasetStatus.FAILED_TO_DOWNLOAD,
    Stage.DECODE: Img2datasetStatus.FAILED_TO_RESIZE,
    Stage.IMAGE_FILTER: Img2datasetStatus.FAILED_TO_RESIZE,
    Stage.CLIP: Img2datasetStatus.FAILED_TO_RESIZE,
    Stage.DEDUPE: Img2datasetStatus.FAILED_TO_RESIZE,
}
if set(_IMG2DATASET_STATUS_OF_STAGE) != set(Stage):  # pragma: no cover - guards a new stage
    raise RuntimeError("lait.record: every Stage needs an img2dataset status")


def img2dataset_status_of(status: Status, reject_stage: Stage | None) -> str | None:
    """img2dataset's per-sample status for a record: `success` when accepted; for a reject,
    `failed_to_download` if its stage came before the image was downloaded (extract, text
    filters, language, fetch), else `failed_to_resize` (decode, image filters, CLIP,
    dedupe); None while the record is still a candidate."""
    if status is Status.ACCEPTED:
        return Img2datasetStatus.SUCCESS.value
    if status is Status.REJECTED and reject_stage is not None:
        return _IMG2DATASET_STATUS_OF_STAGE[reject_stage].value
    return None


def sighting_id(key: str, source: str, where: str) -> str:
    """The stable id of one sighting of candidate `key`: a hash of the key, the source and
    where the candidate was seen (the page fetched, or a list file and its line), so every
    row of a run has its own id and a rerun gives each row the same one.

    Keys repeat (the same favicon on every page, a list row given twice); sighting ids do not.
    """
    digest = hashlib.sha256(f"{key}\x00{source}\x00{where}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:24]


# `<_io.BytesIO object at 0x7f3a...>`: a repr with a memory address differs on every run.
_OBJECT_ADDRESS = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


# `Read timed out. (read timeout=0.4834416749981756)`: urllib3 names the budget that was
# left, which differs on every fetch of the URL.
_TIMEOUT_LEFT = re.compile(r"\b(read|connect) timeout=[0-9.]+")


def deterministic_detail(detail: str | None) -> str | None:
    """`detail` with object reprs' memory addresses removed (`<_io.BytesIO object>`) and
    urllib3's time-left figures dropped (`(read timeout)`), so the ledger of a rerun is the
    same; reject details come from library errors that embed them."""
    if detail is None:
        return detail
    if " object at 0x" in detail:
        detail = _OBJECT_ADDRESS.sub(r"<\1 object>", detail)
    if " timeout=" in detail:
        detail = _TIMEOUT_LEFT.sub(r"\1 timeout", detail)
    return detail


def record_key(url: str, caption: str) -> str:
    """The stable key of a candidate: a hash of (url, caption), so reruns agree.

    Sources pass `url` in canonical form (`lait.urls.resolve_http_url`), so two
    spellings of one image URL (`HTTP://A.com:80/x`, `http://a.com/x#y`) give one key.

    Hex only, so it holds no dots and is safe as a WebDataset key and a file name.
    """
    digest = hashlib.sha256(f"{url}\x00{caption}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:24]


FaceBox = tuple[int, int, int, int]  # x1, y1, x2, y2 in the stored image's pixels


def face_boxes_of(value: Any) -> tuple[FaceBox, ...] | None:
    """`face_boxes` as a record holds it, from what a reader gives: a list of 4-int lists
    (parquet's list<list<int32>>, KEY.json), or the JSON text folders written before the
    column was typed; None stays None (faces not looked for)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    return tuple((int(a), int(b), int(c), int(d)) for a, b, c, d in value)


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """One image-text candidate and everything the pipeline learned about it."""

    key: str
    source: str
    url: str
    caption: str
    caption_source: CaptionSource
    page_url: str | None = None
    sighting_id: str | None = None
    image: bytes | None = dataclasses.field(default=None, repr=False)
    # Where the fetched, resized bytes wait while selection runs on metadata only
    # (`pipeline.staging`); never written to the dataset.
    image_ref: str | None = None
    # The image's colour thumbnails (dedupe.fingerprint.colour_thumbnail), taken where the
    # pixels are decoded anyway (the fetch) so dedupe needs no second read; not a column.
    colour_thumbnail: bytes | None = dataclasses.field(default=None, repr=False)
    image_format: str | None = None
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    num_bytes: int | None = None
    sha256: str | None = None
    phash: str | None = None
    language: str | None = None
    language_score: float | None = None
    clip_score: float | None = None
    # Content heads on the CLIP image embedding (`pipeline.clip`): probabilities in [0, 1],
    # None where the head is off or the record was never scored.
    p_nonnatural: float | None = None
    p_unsafe: float | None = None
    p_watermark: float | None = None
    # Faces blurred in the stored image (`image.blur_faces`): (x1, y1, x2, y2) boxes in the
    # stored image's pixels (x2, y2 exclusive), () when none was found, None when not looked
    # for. Parquet: list<list<int32>>.
    face_boxes: tuple[FaceBox, ...] | None = None
    status: Status = Status.CANDIDATE
    reject_stage: Stage | None = None
    reject_reason: RejectReason | None = None
    reject_detail: str | None = None
    reject_value: float | None = None
    reject_limit: float | None = None
    duplicate_of: str | None = None
    exif: str | None = None

    @classmethod
    def candidate(
        cls,
        *,
        source: str,
        url: str,
        caption: str,
        caption_source: CaptionSource,
        page_url: str | None = None,
        where: str | None = None,
        key: str | None = None,
    ) -> Record:
        """A fresh candidate with its stable key and sighting id.

        `where` says where it was seen, e.g. "list.tsv:42" (default: `page_url`); `key`
        replaces the (url, caption) hash where that cannot identify the candidate (a
        malformed row, a URL kept shortened).
        """
        key = record_key(url, caption) if key is None else key
        return cls(
            key=key,
            source=source,
            url=url,
            caption=caption,
            caption_source=caption_source,
            page_url=page_url,
            sighting_id=sighting_id(key, source, where if where is not None else page_url or ""),
        )

    def rejected(
        self,
        reason: RejectReason,
        detail: str | None = None,
        *,
        duplicate_of: str | None = None,
        value: float | None = None,
        limit: float | None = None,
    ) -> Record:
        """This record, settled as rejected for `reason` (its stage follows from the reason).

        `value` and `limit` are the measure and the bound it failed, where the reason is a
        comparison (a CLIP score under its threshold, a side under the minimum); `detail`
        says the same in words. Image bytes are dropped: the ledger keeps metadata, not pixels.
        """
        return dataclasses.replace(
            self,
            image=None,
            image_ref=None,
            colour_thumbnail=None,
            status=Status.REJECTED,
            reject_stage=reason.stage,
            reject_reason=reason,
            reject_detail=deterministic_detail(detail),
            reject_value=None if value is None else float(value),
            reject_limit=None if limit is None else float(limit),
            duplicate_of=duplicate_of if duplicate_of is not None else self.duplicate_of,
        )

    def accepted(self) -> Record:
        """This record, settled as accepted. It must carry an image (its bytes, or a staging
        reference the writer reads them from)."""
        if (self.image is None and self.image_ref is None) or self.image_format is None:
            raise ValueError(f"record {self.key} cannot be accepted without image bytes")
        return dataclasses.replace(self, status=Status.ACCEPTED)

    def accepted_if_live(self) -> Record:
        """Accepted, unless a stage already rejected it (then unchanged)."""
        return self if self.status is Status.REJECTED else self.accepted()

    @property
    def error_message(self) -> str | None:
        """img2dataset's `error_message`: None for a sample, else the reason and its detail
        in one line, as img2dataset writes an error's text."""
        if self.reject_reason is None:
            return None
        reason = self.reject_reason.value
        return reason if not self.reject_detail else f"{reason}: {self.reject_detail}"

    @property
    def img2dataset_status(self) -> str | None:
        """This record's status in img2dataset's terms (see `img2dataset_status_of`)."""
        return img2dataset_status_of(self.status, self.reject_stage)

    def metadata(self) -> dict[str, Any]:
        """Every field but the image bytes, then the derived img2dataset columns
        (`DERIVED_COLUMNS`), as JSON-ready plain values."""
        out: dict[str, Any] = {}
        for field in METADATA_FIELDS:
            value = getattr(self, field)
            out[field] = value.value if isinstance(value, StrEnum) else value
        out["error_message"] = self.error_message
        out["img2dataset_status"] = self.img2dataset_status
        return out

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], image: bytes | None = None) -> Record:
        """Rebuild a record from `metadata()` output (unknown keys are ignored)."""
        values: dict[str, Any] = {f: metadata.get(f) for f in METADATA_FIELDS}
        values["caption_source"] = CaptionSource(values["caption_source"])
        values["status"] = Status(values["status"] or Status.CANDIDATE)
        if values["reject_stage"] is not None:
            values["reject_stage"] = Stage(values["reject_stage"])
        if values["reject_reason"] is not None:
            values["reject_reason"] = RejectReason(values["reject_reason"])
        values["face_boxes"] = face_boxes_of(values["face_boxes"])
        return cls(image=image, **values)


_NOT_METADATA = frozenset({"image", "image_ref", "colour_thumbnail"})
METADATA_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Record) if f.name not in _NOT_METADATA
)
# Columns computed from the fields, written beside them so img2dataset's readers find theirs.
DERIVED_COLUMNS: tuple[str, ...] = ("error_message", "img2dataset_status")
METADATA_COLUMNS: tuple[str, ...] = METADATA_FIELDS + DERIVED_COLUMNS


class _RecordDraft:
    """A mutable stand-in with exactly `Record`'s slot layout, so a copy can be built with
    plain slot stores and then become a `Record` by `__class__` assignment (CPython checks
    the layouts match and raises TypeError otherwise)."""

    __slots__ = Record.__slots__


def make_replacer(*fields: str) -> Callable[..., Record]:
    """A fast `dataclasses.replace` for hot loops that set the same `fields` every time.

        with_language = make_replacer("language", "language_score")
        with_language(record, "en", 0.93)  # == dataclasses.replace(record, language=..., ...)

    `replace` goes through `__init__`, where a frozen dataclass sets each of its 32 fields
    with `object.__setattr__` (about 4 µs a record, more than fastText's own prediction).
    The copy here is generated code, as dataclasses generate `__init__`: one slot read and
    one slot store per field. The result is an ordinary, frozen `Record`: equal, hashing
    and pickling exactly as the `replace` result. Field values are not validated, the same
    as with `replace` (neither has any validation to run).
    """
    names = tuple(f.name for f in dataclasses.fields(Record))
    unknown = [f for f in fields if f not in names]
    if unknown or len(set(fields)) != len(fields):
        raise ValueError(f"make_replacer: unknown or repeated fields {fields}")
    lines = [f"def replace(record, {', '.join(fields)}):", "    draft = new(Draft)"]
    lines += [f"    draft.{n} = {n if n in fields else 'record.' + n}" for n in names]
    lines += ["    draft.__class__ = Record", "    return draft"]
    namespace: dict[str, Any] = {"new": object.__new__, "Draft": _RecordDraft, "Record": Record}
    exec("\n".join(lines), namespace)  # source built above from field names only
    replace: Callable[..., Record] = namespace["replace"]
    return replace
