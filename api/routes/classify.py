"""POST /classify/target-domain: the DANN on uploaded target-domain digits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from workers.protocol import CLASSIFY_ROLES, TASK_CLASSIFY

from ..deps import JobsDep, RepresentationDep, SettingsDep, WorkersDep, wait_seconds
from ..errors import TooLarge
from ..jobs import job_response, new_job_id
from ..schemas import CLASSIFY_DONE_EXAMPLE, ClassifyQuery, JobKind, JobPublic
from ..uploads import CheckedImage, check_image, clean_name, store_inputs
from .common import error_responses, job_responses

router = APIRouter(prefix="/classify", tags=["classify"])


@router.post(
    "/target-domain",
    response_model=JobPublic,
    summary="Classify digits from SVHN or USPS",
    description=(
        "Upload one or many digit images (PNG or JPEG, any size, gray or RGB) as multipart fields named "
        "`files`, and say which domain they come from with `target`. Each image gets its label and the ten "
        "class probabilities from the DANN adapted to that domain.\n\n"
        "Send `Accept: text/csv` for the course's CSV (`image_name,label`) instead of JSON.\n\n"
        "```\ncurl -F files=@00001.png -F files=@00002.png 'localhost:8000/classify/target-domain?target=svhn'\n"
        "curl -F files=@00001.png -H 'Accept: text/csv' 'localhost:8000/classify/target-domain?target=usps'\n```\n\n"
        "Limits: `MAX_FILES` files, `MAX_FILE_BYTES` per file, `MAX_BODY_BYTES` per request, "
        "`MAX_IMAGE_PIXELS` per image."
    ),
    responses={
        **job_responses(CLASSIFY_DONE_EXAMPLE, extra_media={"text/csv": "image_name,label\n00001.png,3\n"}),
        **error_responses(413, 415, 422, 429, 500, 503),
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
) -> Response:
    wait = wait_seconds(query.wait, settings)
    if len(files) > settings.max_files:
        raise TooLarge(
            f"{len(files)} files is more than {settings.max_files} per request (MAX_FILES): split them into several requests"
        )
    await workers.require(CLASSIFY_ROLES[query.target])
    checked = []
    for index, upload in enumerate(files):
        name = clean_name(upload.filename, index)
        # .size comes from the multipart parser; read one byte past the limit in case it is absent.
        data = await upload.read(settings.max_file_bytes + 1)
        if len(data) > settings.max_file_bytes:
            raise TooLarge(
                f"{name!r} is larger than {settings.max_file_bytes:,} bytes (MAX_FILE_BYTES): downscale or re-compress it"
            )
        image = await run_in_threadpool(check_image, name, data, max_pixels=settings.max_image_pixels)
        checked.append(CheckedImage(name, image))
    job_id = new_job_id()
    stored = await run_in_threadpool(store_inputs, settings.results_dir, job_id, checked)
    names = [image.name for image in checked]
    record = await jobs.submit(
        JobKind.classify,
        TASK_CLASSIFY,
        kwargs={"target": query.target, "inputs": stored, "names": names},
        params={"target": query.target, "files": len(names)},
        job_id=job_id,
    )
    state = await jobs.wait(record.id, wait)
    return job_response(record, state, representation=representation, results_dir=settings.results_dir)
