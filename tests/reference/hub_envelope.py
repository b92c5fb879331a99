"""The reference's own envelope code as a test peer for lxgate (tests/hub_reference.rs).

  seal    IN OUT_DIR PUBKEY IDENTITY_JSON  lx-annotate's prepare_hub_export_envelope seals IN;
                                           prints the persisted envelope record (JSON)
  open    CT ENVELOPE_JSON PRIVKEY JOB_JSON OUT
                                           endoreg-db's prepare_inbound_hub_envelope opens CT
                                           into OUT; prints {"ok": …} or the rejection code
  receipt ENVELOPE_JSON STATUS_JSON        lx-dtypes' strict receipt and
                                           validate_hub_media_receipt_matches_envelope
  identity BODY_JSON                       endoreg-db's reject_transferred_identity_hashes

Packages are entered without running their __init__ (which pulls in Celery, Django apps
and the Rust backend); the modules used are the reference's, compiled with the syntax
shims refload prints. Django settings, the database model and the file plumbing they
import are stubbed and printed (stderr), never the envelope or validation logic.
"""
import contextlib
import hashlib
import json
import os
import sys
import types
from pathlib import Path

import refload

package = refload.package


TYPE_ALIASES = [
    ('type HubMediaEnvelopeContractVersion = Literal["hub_media_envelope_v1"]',
     'HubMediaEnvelopeContractVersion = Literal["hub_media_envelope_v1"]'),
    ('type HubMediaEnvelopeProfile = Literal["x25519-hkdf-sha256-aes256gcm-v1"]',
     'HubMediaEnvelopeProfile = Literal["x25519-hkdf-sha256-aes256gcm-v1"]'),
    ('type HubMediaResourceKind = Literal["video", "report"]',
     'HubMediaResourceKind = Literal["video", "report"]'),
    ('type HubMediaRole = Literal["processed"]', 'HubMediaRole = Literal["processed"]'),
    ('type HubMediaTransferMode = Literal["metadata_and_processed_media"]',
     'HubMediaTransferMode = Literal["metadata_and_processed_media"]'),
]


def contracts():
    package("lx_dtypes.models.contracts")
    return refload.load("lx_dtypes.models.contracts.hub_media_envelope", shims=TYPE_ALIASES)


def settings(**values):
    refload.stub("django.conf", settings=types.SimpleNamespace(**values))


def file_plumbing(runtime_root):
    """endoreg-db's storage helpers import Django; the envelope code uses them to
    write and delete files. Plain-file stand-ins."""
    package("endoreg_db.utils")

    def atomic_create_file(*, destination, content, required_bytes, file_mode, dir_mode):
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
        tmp = destination.with_suffix(destination.suffix + ".part")
        with open(tmp, "wb") as f:
            for chunk in content:
                f.write(chunk)
        os.chmod(tmp, file_mode)
        os.replace(tmp, destination)

    def safe_unlink_file(path, missing_ok=False):
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()

    def get_file_hash(path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    refload.stub("endoreg_db.utils.file_operations",
                 atomic_create_file=atomic_create_file,
                 atomic_handoff_file=atomic_create_file,
                 safe_unlink_file=safe_unlink_file,
                 get_file_hash=get_file_hash)
    paths = types.SimpleNamespace(runtime_root=Path(runtime_root), transcoding=Path(runtime_root))
    refload.stub("endoreg_db.utils.paths", get_runtime_paths=lambda: paths)

    def field_file_size(f):
        return os.path.getsize(f)

    def iter_field_file_bytes(f, *, start, end, chunk_size):
        with open(f, "rb") as src:
            src.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = src.read(min(chunk_size, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    refload.stub("endoreg_db.utils.storage_streaming",
                 field_file_size=field_file_size, iter_field_file_bytes=iter_field_file_bytes)


def seal(src, out_dir, pubkey, identity):
    contracts()
    settings(LX_ANNOTATE_HUB_EXPORT_ENVELOPE_STAGING_DIR=out_dir,
             LX_ANNOTATE_HUB_EXPORT_RECIPIENT_PUBLIC_KEY_FILE=pubkey)
    file_plumbing(out_dir)
    package("lx_annotate.hub")
    env = refload.load("lx_annotate.hub.hub_export_envelope")
    config = env.resolve_hub_export_envelope_config()
    prepared = env.prepare_hub_export_envelope(field_file=src, config=config, **identity)
    return {
        "envelope": json.loads(prepared.envelope.model_dump_json()),
        "header": prepared.envelope.model_dump_json(),
        "ciphertext_path": str(prepared.ciphertext_path),
        "ciphertext_sha256": prepared.ciphertext_sha256,
        "ciphertext_size": prepared.ciphertext_size,
    }


def open_(ct, header, privkey, job, out):
    contracts()
    package("lx_dtypes.models.contracts")
    refload.stub("lx_dtypes.models.contracts.json_types", JsonObject=dict, JsonValue=object)
    settings(ENDOREG_HUB_TRANSFER_RECIPIENT_PRIVATE_KEY_FILES=[privkey],
             ENDOREG_HUB_TRANSFER_REQUIRE_ROOT_OWNED_PRIVATE_KEYS=True)
    file_plumbing(os.path.dirname(out))
    refload.stub("django.db.models.fields.files", FieldFile=object)
    # Patient identity hashing and the Rust file identity are not used by the envelope
    # (it takes get_bytes_hash, plain SHA-256, from this module).
    refload.stub("endoreg_db.config.identity_hashing",
                 current_identity_keyring=None, validate_identity_salt=None)
    refload.stub("endoreg_db.utils.rust_backend", stable_file_identity=None)
    refload.load("endoreg_db.utils.hashs", shims=[
        ('type HubRecordKind = Literal["patient", "examination"]',
         'HubRecordKind = Literal["patient", "examination"]'),
    ])

    class ResourceKind:
        VIDEO = types.SimpleNamespace(value="video")

    refload.stub("endoreg_db.models.hub.transfer_job",
                 TransferJob=type("TransferJob", (), {"ResourceKind": ResourceKind}))
    package("endoreg_db.services.hub")
    te = refload.load("endoreg_db.services.hub.transfer_envelope", shims=[
        ("from collections.abc import Buffer, Generator, Iterator, Sequence",
         "from collections.abc import Generator, Iterator, Sequence\nBuffer = bytes"),
    ])
    ns = types.SimpleNamespace
    transfer = ns(
        transfer_key=job["transfer_key"], resource_kind=job["resource_kind"],
        resource_hash=job["resource_hash"], transfer_mode=job["transfer_mode"],
        resource_rows=job["resource_rows"],
        source_node=ns(node_key=job["source_node_key"]),
        target_node=ns(node_key=job["target_node_key"]),
        source_center=ns(center_key=job["source_center_key"]),
    )
    size = os.path.getsize(ct)
    try:
        with open(ct, "rb") as stream, te.prepare_inbound_hub_envelope(
            transfer_job=transfer, ciphertext_stream=stream, ciphertext_size=size,
            envelope_json=header, media_role="processed",
        ) as prepared, open(out, "wb") as dst:
            while chunk := prepared.plaintext_stream.read(1 << 20):
                dst.write(chunk)
            result = {"ok": True, "ciphertext_sha256": prepared.ciphertext_sha256,
                      "fingerprint": prepared.envelope_fingerprint_sha256}
    except te.HubMediaEnvelopeError as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out)
        return {"ok": False, "rejection_code": e.rejection_code}
    return result


def receipt(envelope, status):
    c = contracts()
    env = c.HubMediaEnvelopeMetadata.model_validate(envelope)
    r = c.HubMediaEnvelopeReceipt.model_validate(status["envelope_receipt"])
    c.validate_hub_media_receipt_matches_envelope(envelope=env, receipt=r)
    return {"ok": True, "fingerprint": env.envelope_fingerprint_sha256()}


def identity(body):
    refload.stub("django.http", FileResponse=object, HttpRequest=object, HttpResponse=object,
                 JsonResponse=object, StreamingHttpResponse=object)
    package("endoreg_db.services.privacy")
    rb = refload.load("endoreg_db.services.privacy.response_boundary")
    try:
        rb.reject_transferred_identity_hashes(body)
    except ValueError as e:
        return {"ok": False, "error": str(e)}
    return {"ok": True}


def main():
    cmd, *args = sys.argv[1:]
    if cmd == "seal":
        out = seal(args[0], args[1], args[2], json.loads(args[3]))
    elif cmd == "open":
        out = open_(args[0], Path(args[1]).read_text(), args[2], json.loads(Path(args[3]).read_text()), args[4])
    elif cmd == "receipt":
        out = receipt(json.loads(Path(args[0]).read_text()), json.loads(Path(args[1]).read_text()))
    elif cmd == "identity":
        out = identity(json.loads(Path(args[0]).read_text()))
    else:
        raise SystemExit(f"unknown command {cmd}")
    for line in refload.report():
        print(line, file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
