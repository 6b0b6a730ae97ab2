"""Explore: public datasets and projects, searchable without a key."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from ..errors import Invalid
from ..vision import TASKS
from ..web import current_user, q_choice, q_int, reply, services

PAGE = 20
SORTS = (
    "stars",
    "newest",
    "oldest",
    "name-asc",
    "name-desc",
    "count-desc",
    "count-asc",
)
_ORDER = {
    # Stars are not kept yet: every count is 0, so "stars" lists the newest first.
    "stars": "updated_at DESC",
    "newest": "created_at DESC",
    "oldest": "created_at ASC",
    "name-asc": "name COLLATE NOCASE ASC",
    "name-desc": "name COLLATE NOCASE DESC",
    "count-desc": "item_count DESC",
    "count-asc": "item_count ASC",
}


def _like(text: str) -> str:
    return (
        "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    )


def _filters(request: Request) -> tuple[list[str], list]:
    where, params = ["visibility = 'public'"], []
    q = request.query_params.get("q", "").strip()
    if len(q) > 200:
        raise Invalid("q must be at most 200 characters")
    if q:
        where.append(
            "(name LIKE ? ESCAPE '\\' OR slug LIKE ? ESCAPE '\\' OR description LIKE ? ESCAPE '\\')"
        )
        params += [_like(q)] * 3
    if author := request.query_params.get("author"):
        where.append("owner = ?")
        params.append(author)
    return where, params


_FROM = {
    "datasets": (
        "SELECT d.*, u.username AS owner,"
        " (SELECT count(*) FROM images i WHERE i.dataset_id = d.id) AS item_count"
        " FROM datasets d JOIN users u ON u.id = d.owner_id"
        " WHERE d.deleted_at IS NULL"
    ),
    "projects": (
        "SELECT p.*, u.username AS owner,"
        " (SELECT count(*) FROM models m WHERE m.project_id = p.id"
        " AND m.deleted_at IS NULL) AS item_count"
        " FROM projects p JOIN users u ON u.id = p.owner_id"
        " WHERE p.deleted_at IS NULL"
    ),
}


def _public_rows(
    request: Request,
    kind: str,
    where: list[str],
    params: list,
    order: str,
    limit: int,
    offset: int,
) -> list[dict]:
    """One page (plus one row, to tell whether more follow) of public datasets or
    projects matching the filters."""
    sql = f"SELECT * FROM ({_FROM[kind]}) WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ? OFFSET ?"
    return services(request).db.query(sql, [*params, limit + 1, offset])


def _search_datasets(
    request: Request, order: str, limit: int, offset: int
) -> list[dict]:
    where, params = _filters(request)
    tasks = [t for t in request.query_params.get("task", "").split(",") if t]
    if any(t not in TASKS for t in tasks):
        raise Invalid(f"task must be among: {', '.join(TASKS)}")
    if tasks:
        where.append(f"task IN ({','.join('?' for _ in tasks)})")
        params += tasks
    db = services(request).db
    out = []
    for row in _public_rows(request, "datasets", where, params, order, limit, offset):
        stats = db.dataset_stats(row["id"])
        out.append(
            {
                "id": row["id"],
                "dataset": row["slug"],
                "name": row["name"],
                "description": row["description"],
                "owner": row["owner"],
                "visibility": "public",
                "imageCount": stats.get("images", 0),
                "classCount": len(row["class_names"] or []),
                "classNames": row["class_names"] or [],
                "task": row["task"],
                "totalBytes": stats.get("bytes", 0),
                "splits": {
                    k: stats.get(k, 0) for k in ("train", "val", "test", "labeled")
                },
                "starCount": 0,
                "sampleImages": [],
                "updatedAt": row["updated_at"],
            }
        )
    return out


def _search_projects(
    request: Request, order: str, limit: int, offset: int
) -> list[dict]:
    where, params = _filters(request)
    db = services(request).db
    out = []
    for row in _public_rows(request, "projects", where, params, order, limit, offset):
        names = [m["slug"] for m in db.models_of_project(row["id"], 20)]
        out.append(
            {
                "id": row["id"],
                "project": row["slug"],
                "name": row["name"],
                "description": row["description"],
                "owner": row["owner"],
                "visibility": "public",
                "modelCount": row["item_count"],
                "modelNames": names,
                "totalBytes": 0,
                "starCount": 0,
                "updatedAt": row["updated_at"],
            }
        )
    return out


async def search(request: Request):
    current_user(request)  # a bad key is still a 401
    kind = q_choice(request, "type", ("all", "projects", "datasets"), "all")
    order = _ORDER[q_choice(request, "sort", SORTS, "stars")]
    offset = q_int(request, "offset", 0, 0, 10**6)
    limit = q_int(request, "limit", PAGE, 1, 100)
    if request.query_params.get("starred") == "true":
        return reply({"projects": [], "datasets": [], "hasMore": False})
    datasets = (
        _search_datasets(request, order, limit, offset) if kind != "projects" else []
    )
    projects = (
        _search_projects(request, order, limit, offset) if kind != "datasets" else []
    )
    has_more = len(datasets) > limit or len(projects) > limit
    return reply(
        {
            "projects": projects[:limit],
            "datasets": datasets[:limit],
            "hasMore": has_more,
        }
    )


async def sidebar(request: Request):
    current_user(request)
    datasets = _search_datasets(request, _ORDER["newest"], 5, 0)[:5]
    projects = _search_projects(request, _ORDER["newest"], 5, 0)[:5]
    return reply({"datasets": datasets, "projects": projects})


routes = [
    Route("/api/explore/search", search, methods=["GET"]),
    Route("/api/explore/sidebar", sidebar, methods=["GET"]),
]
