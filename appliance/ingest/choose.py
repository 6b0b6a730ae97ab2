"""Which reader an upload needs: NDJSON, COCO, a classification tree, or YOLO
(which also covers images-only uploads and videos)."""

from __future__ import annotations

from ..blobs import BlobStore
from ..signing import Signer
from .classify import find_tree, plan_classify
from .coco import find_coco, plan_coco
from .layout import find_yaml, yaml_task
from .ndjson_in import find_ndjson, plan_ndjson
from .plan import Plan
from .sources import Source, read_text
from .yolo import plan_yolo


def choose_plan(
    source: Source,
    names: list[str],
    dataset: dict,
    blobs: BlobStore,
    signer: Signer | None,
) -> Plan:
    ndjson = find_ndjson(names)
    if ndjson:
        return plan_ndjson(source, names, ndjson, blobs, signer)
    docs = find_coco(source, names)
    if docs:
        return plan_coco(source, names, docs)
    yaml_name = find_yaml(names)
    if yaml_name is None or yaml_task(read_text(source, yaml_name)) == "classify":
        tree = find_tree(names)
        if tree:
            return plan_classify(source, names, tree)
    return plan_yolo(source, names)
