"""gcp-storage-emulator with the object generations tensorstore relies on; its own command line:
`python tests/gcs_emulator.py start --in-memory --port 9023 --default-bucket bucket`.

The emulator (2026.7) ignores the preconditions `ifGenerationMatch` / `ifGenerationNotMatch` and sends
no `x-goog-generation` header with an object's bytes. Tensorstore's `gcs` driver, which orbax's OCDBT
checkpoints go through, reads a manifest again on the condition that it changed and writes it on the
condition that it did not: without the header it takes the generation it read to be 0, which is no
generation, and refuses its next request on that manifest ("Malformed StorageGeneration"). Google Cloud
Storage does both; so does the emulator once these two handlers check them.
"""

import sys
from http import HTTPStatus

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def generation(storage, bucket: str, name: str) -> str | None:
    try:
        return storage.get_file_obj(bucket, name)["generation"]
    except NotFound:
        return None


def get(request, response, storage, *args, **kwargs):
    """An object (its bytes with `alt=media`, else its metadata), under its preconditions."""
    current = generation(storage, request.params["bucket_name"], request.params["object_id"])
    if current is not None:  # a missing object is 404 whatever the conditions
        if (match := request.query.get("ifGenerationMatch")) and match[0] != current:
            response.status = HTTPStatus.PRECONDITION_FAILED
            return
        if (not_match := request.query.get("ifGenerationNotMatch")) and not_match[0] == current:
            response.status = HTTPStatus.NOT_MODIFIED
            return
        response["x-goog-generation"] = current
    original_get(request, response, storage, *args, **kwargs)


def insert(request, response, storage, *args, **kwargs):
    """An upload, refused (412) where `ifGenerationMatch` does not hold (0: the object must not exist)."""
    match, name = request.query.get("ifGenerationMatch"), request.query.get("name")
    if match and name and match[0] != (generation(storage, request.params["bucket_name"], name[0]) or "0"):
        response.status = HTTPStatus.PRECONDITION_FAILED
        return
    original_insert(request, response, storage, *args, **kwargs)


original_get, original_insert = objects.get, objects.insert
# The server's routing table takes the handlers when it is imported: patch them first.
objects.get, objects.insert = get, insert

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main

    sys.exit(main(sys.argv[1:]))
