"""What a format reader hands the ingest job: the images it found, how to read
each one and its labels, and what the source says about classes and task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .labels import ParsedLabels


@dataclass(frozen=True)
class Context:
    """What label parsing needs to know, decided once the dataset's task is."""

    task: str
    class_count: int | None
    kpt_shape: list[int] | None
    #: Segment datasets: box rows become 4-point polygons (an explicit opt-in).
    boxes_as_polygons: bool = False


#: Labels for one image, given the context and the displayed image's size.
LabelMaker = Callable[[Context, int, int], ParsedLabels]


class MemberError(Exception):
    """One file could not be read; `reason` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class Entry:
    """One image (or video) to ingest."""

    path: str  # where it was found: the report's key and imageMetadata's
    name: str  # the name the image keeps
    split: str
    read: Callable[[], bytes]
    labels: LabelMaker | None = None  # None: the image has no label at all
    label_path: str | None = None  # the file its labels came from, if another
    metadata: dict | None = None
    video: bool = False


@dataclass
class Plan:
    format: str  # yolo | coco | ndjson | classify | raw
    entries: list[Entry] = field(default_factory=list)
    #: The source's class names in its own index order; None when it has none
    #: (YOLO labels without a YAML: ids index the dataset's own classes).
    class_names: list[str] | None = None
    #: The task the source is, when it says so unmistakably.
    task: str | None = None
    kpt_shape: list[int] | None = None
    flip_idx: list[int] | None = None
    notes: list[str] = field(default_factory=list)
    #: Verdicts on files that are not images: (path, verdict, reason, detail).
    verdicts: list[tuple[str, str, str | None, str | None]] = field(
        default_factory=list
    )
    #: The largest class id seen in label rows, for placeholder names.
    max_class_id: int = -1
    #: Every label row is an 8-coordinate row: an obb source, or quadrilaterals.
    obb_rows: bool = False
    #: The keypoint shape the commonest row length implies, for pose without one.
    kpt_guess: list[int] | None = None
    #: Why no keypoint shape can be guessed from the rows (pose without kpt_shape).
    kpt_problem: str | None = None
    #: Every label row is a pose row (class, box, keypoints with visibility 2).
    pose_rows: bool = False
