"""POST /classify/target-domain: the DANN on uploaded target-domain digits."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from api.deps import (
    CallerDep,
    IdempotencyKeyDep,
    JobsDep,
    RepresentationDep,
    SettingsDep,
    WorkersDep,
    wait_seconds,
)
from api.errors import TooLarge
from api.parsing.params import check_webhook, only_files
from api.parsing.query_rules import strict_query
from api.parsing.uploads import check_image, clean_name, decode_slot
from api.routes.common import error_responses, job_responses
from api.schemas import ClassifyQuery
from api.service.idempotency import Idempotency, digest
from api.service.job_service import new_job_id
from contract.jobs import CLASSIFY_DONE_EXAMPLE, JobKind, JobPublic
from contract.queues import TASK_CLASSIFY
from contract.roles import CLASSIFY_ROLES

router = APIRouter(prefix="/classify", tags=["classify"], dependencies=[Depends(strict_query)])


@router.post(
    "/target-domain",
    response_model=JobPublic,
    summary="Classify digits from SVHN or USPS",
    description=(
        "Upload one or many digit images (PNG or JPEG, any size, gray or RGB) as multipart fields named "
        "`files`, and say which domain they come from with `target`. The other parameters (`target`, `wait`, "
        "`webhook`) go in the query string; a form field other than `files` is refused with a 422 that says so. "
        "Each image gets its label and the ten "
        "class probabilities from the DANN adapted to that domain.\n\n"
        "Send `Accept: text/csv` for the course's CSV (`image_name,label`) instead of JSON.\n\n"
        "```\ncurl -F files=@00001.png -F files=@00002.png 'localhost:8000/classify/target-domain?target=svhn'\n"
        "curl -F files=@00001.png -H 'Accept: text/csv' 'localhost:8000/classify/target-domain?target=usps'\n```\n\n"
        "Each image is shrunk to the model's 28x28 RGB input as it arrives (Pillow's antialiased bilinear "
        "filter, the one the training digits were made with), after its EXIF orientation. 16-bit grey PNGs are "
        "scaled by their bit depth; transparent pixels (alpha channel or transparent colour) are composited onto "
        "white; an MPO (multi-picture JPEG) uses its first picture. Other pixel formats get a 415 that says what "
        "to send.\n\n"
        "Results name each image by its file name: the base name only (no folders), characters other than "
        "letters, digits and ` ._-()+,@` replaced by `_`, and cut to 200 characters keeping the extension "
        "(a longer name is shortened, never refused). A file without a name is `image_NNNN.png`, by position.\n\n"
        "Limits: `MAX_FILES` files, `MAX_FILE_BYTES` per file, `MAX_BODY_BYTES` per request, "
        "`MAX_IMAGE_PIXELS` per image."
    ),
    responses={
        **job_responses(CLASSIFY_DONE_EXAMPLE, extra_media={"text/csv": "image_name,label\n00001.png,3\n"}),
        **error_responses(409, 413, 415, 422, 429, 500, 503),
    },
)
async def classify_target_domain(
    query: Annotated[ClassifyQuery, Query()],
    files: Annotated[
        list[UploadFile],
        File(
            description="The images, each as a multipart field named `files` (PNG or JPEG; repeat the field for more)."
        ),
    ],
    jobs: JobsDep,
    workers: WorkersDep,
    settings: SettingsDep,
    representation: RepresentationDep,
    idempotency_key: IdempotencyKeyDep,
    caller: CallerDep,
    request: Request,
) -> Response:
    only_files(await request.form(), "files", ClassifyQuery)  # parsed already: FastAPI read `files` from it
    check_webhook(query.webhook, settings)
    wait = wait_seconds(query.wait, settings)
    if len(files) > settings.max_files:
        raise TooLarge(
            f"{len(files)} files is more than {settings.max_files} per request (MAX_FILES): "
            "split them into several requests"
        )
    await workers.require(CLASSIFY_ROLES[query.target])
    names: list[str] = []
    digits: list[np.ndarray] = []
    for index, upload in enumerate(files):
        name = clean_name(upload.filename, index)
        # .size comes from the multipart parser; read one byte past the limit in case it is absent.
        data = await upload.read(settings.max_file_bytes + 1)
        await upload.close()  # its spooled bytes go now, not at the end of the request
        if len(data) > settings.max_file_bytes:
            raise TooLarge(
                f"{name!r} is larger than {settings.max_file_bytes:,} bytes (MAX_FILE_BYTES): "
                "downscale or re-compress it"
            )
        # One image decoded at a time (and per core across requests), and only its 28x28 digit kept.
        async with decode_slot():
            digits.append(await run_in_threadpool(check_image, name, data, max_pixels=settings.max_image_pixels))
        names.append(name)
    job_id = new_job_id()
    stored = await jobs.files.store_inputs(job_id, digits)
    record = await jobs.submit(
        JobKind.classify,
        TASK_CLASSIFY,
        kwargs={"target": query.target, "inputs": stored, "names": names},
        params={"target": query.target, "files": len(names)},
        owner=caller,
        job_id=job_id,
        webhook=query.webhook,
        # The same images (as the model sees them) under the same names: the same job.
        idempotency=Idempotency.of(
            idempotency_key,
            "POST /classify/target-domain",
            {"target": query.target, "images": [[name, digest(d.tobytes())] for name, d in zip(names, digits)]},
        ),
    )
    state = await jobs.wait_after_submit(record.id, wait)
    return await jobs.response(record, state, representation=representation)
