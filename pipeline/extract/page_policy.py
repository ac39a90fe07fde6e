"""What one page lets the job take: its `<meta name="robots">` opt-out and the per-page cap.

Applied to a page's extracted records wherever pages are read (the crawl's fetched pages and
WARC records), after extraction and before anything is fetched:

- A page whose `<meta name="robots">` (or a meta naming our user agent, `<meta name="lait">`)
  holds an opt-out directive (`noai`, `noimageai`, `noimageindex` by default) gives every
  live candidate rejected as `META_ROBOTS_OPT_OUT`. `noindex` and `none` are not opt-outs
  here: they ask search engines not to list the *page*, and say nothing about its images.
- Otherwise, the first `max_images` distinct image URLs of the page (in page order) are
  kept and the live candidates of every further image are rejected as `OVER_PAGE_CAP`, so
  one page of 60,000 images cannot hold a host or a worker for hours.

Candidates extraction already rejected (icons, data URIs, ...) keep their reason: nothing
is lost and nothing is counted twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from lait.record import Record, RejectReason, Status
from pipeline.fetch.config import DEFAULT_META_OPT_OUT_DIRECTIVES, FetchConfig


@dataclasses.dataclass(frozen=True)
class PagePolicy:
    """The per-page rules: the image cap and whether (and how) meta robots is honoured."""

    max_images: int = 1000
    respect_meta_robots: bool = True
    opt_out_directives: tuple[str, ...] = DEFAULT_META_OPT_OUT_DIRECTIVES
    agent_token: str = "lait"

    def __post_init__(self) -> None:
        if self.max_images < 1:
            raise ValueError("PagePolicy: max_images must be at least 1")

    @classmethod
    def of(cls, fetch: FetchConfig) -> PagePolicy:
        """The page rules a job's fetch config sets."""
        return cls(
            max_images=fetch.max_images_per_page,
            respect_meta_robots=fetch.respect_meta_robots,
            opt_out_directives=fetch.meta_robots_opt_out_directives,
            agent_token=fetch.user_agent_token,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class PolicedPage:
    """A page's records after its policy, and what the policy did to them."""

    records: list[Record]
    capped: int  # live candidates rejected as OVER_PAGE_CAP
    opted_out: int  # live candidates rejected as META_ROBOTS_OPT_OUT
    opt_out: str | None  # the directive that opted the page out, e.g. "noai"


def meta_robots_opt_out(
    meta: Iterable[tuple[str, str]], agent_token: str, directives: Iterable[str]
) -> str | None:
    """The first opt-out directive of the page's `<meta name="robots">` or `<meta
    name="AGENT">` (our token) contents, as "robots: noai", or None."""
    wanted = {d.strip().lower() for d in directives}
    names = {"robots", agent_token.lower()}
    for name, content in meta:
        if name not in names:
            continue
        for part in content.split(","):
            directive = part.strip().lower()
            if directive in wanted:
                return f"{name}: {directive}"
    return None


def apply_page_policy(
    records: Sequence[Record], meta: Iterable[tuple[str, str]], policy: PagePolicy
) -> PolicedPage:
    """`records` (one page's, in page order) with the page's opt-out and cap applied."""
    opt_out = (
        meta_robots_opt_out(meta, policy.agent_token, policy.opt_out_directives)
        if policy.respect_meta_robots
        else None
    )
    if opt_out is not None:
        out = [
            r.rejected(RejectReason.META_ROBOTS_OPT_OUT, f"the page's <meta {opt_out}>")
            if r.status is Status.CANDIDATE
            else r
            for r in records
        ]
        opted = sum(1 for r in records if r.status is Status.CANDIDATE)
        return PolicedPage(out, 0, opted, opt_out)
    order: dict[str, int] = {}  # image URL -> its place among the page's live images
    for record in records:
        if record.status is Status.CANDIDATE:
            order.setdefault(record.url, len(order))
    total = len(order)
    if total <= policy.max_images:
        return PolicedPage(list(records), 0, 0, None)
    out = []
    capped = 0
    for record in records:
        if record.status is Status.CANDIDATE and order[record.url] >= policy.max_images:
            capped += 1
            record = record.rejected(
                RejectReason.OVER_PAGE_CAP,
                f"image {order[record.url] + 1} of the page's {total}; "
                f"the first {policy.max_images} are taken",
                value=total,
                limit=policy.max_images,
            )
        out.append(record)
    return PolicedPage(out, capped, 0, None)
