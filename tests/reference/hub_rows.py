"""The reference's own row schemas and payload rules as a test peer for lxgate's sender
(tests/hub_export.rs).

  check BODY_JSON   the register body through endoreg-db 1.6.5's own validators:
                    schemas.persisted_json.validate_transfer_resource_rows (the strict
                    TransferVideoResourceRows / TransferReportResourceRows, extra=forbid),
                    validate_transfer_processing_snapshot,
                    schemas.hub_payloads.validate_transfer_provenance_payload (what the
                    hub's TransferJob runs at save) and
                    services.privacy.response_boundary.reject_transferred_identity_hashes
                    (the serializer's first rule); prints {"ok": true, "resource_rows": …}
                    with the rows as the hub keeps them, or {"ok": false, "error": …}.
  sender BODY_JSON  the body through lx-dtypes 0.5.8's payload contract, the check
                    lx-annotate 1.6.4's exporter runs before it sends
                    (hub_export_payloads._validate_transfer_contract →
                    validate_hub_transfer_{video,report}_payload, which validate
                    HubTransfer{Video,Report}TransferPayload); prints {"ok": true} or
                    {"ok": false, "errors": [{"loc": […], "type": …}, …]}.

Loaded on Debian's Python 3.11 from the unpacked wheels. Packages are entered without
running their __init__ (which imports Django apps and the cp312 Rust backend). What 3.11
cannot compile gets refload's syntax shims (PEP 695 `type` statements, also indented
ones, and `class C[T: B]` / `def f[T: B]` type parameters), applied only to modules that
fail to compile and each printed. One environment difference is bridged and printed:
pydantic requires typing_extensions.TypedDict below 3.12, so typing.TypedDict is that
class here (3.12's typing.TypedDict is what the reference sees). Django's HTTP classes,
imported by response_boundary for its response helpers, are stubbed (unused here).
Nothing of the validation logic is stubbed or changed.
"""
import json
import sys
import typing
from pathlib import Path

import typing_extensions

import refload


def load():
    typing.TypedDict = typing_extensions.TypedDict
    refload._log.append("environment: typing.TypedDict = typing_extensions.TypedDict (pydantic needs it below Python 3.12)")
    refload.install_syntax_shims("lx_dtypes", "endoreg_db")
    refload.package("endoreg_db.schemas")
    refload.package("endoreg_db.services.privacy")
    refload.stub("django.http", FileResponse=object, HttpRequest=object, HttpResponse=object,
                 JsonResponse=object, StreamingHttpResponse=object)
    import endoreg_db.schemas.persisted_json as pj
    import endoreg_db.schemas.hub_payloads as hp
    import endoreg_db.services.privacy.response_boundary as rb
    return pj, hp, rb


def check(body):
    pj, hp, rb = load()
    try:
        rb.reject_transferred_identity_hashes(body)
        rows = pj.validate_transfer_resource_rows(body["resource_rows"], resource_kind=body["resource_kind"])
        pj.validate_transfer_processing_snapshot(body.get("processing_snapshot", {}))
        hp.validate_transfer_provenance_payload(body.get("provenance", {}))
    except ValueError as e:
        return {"ok": False, "error": str(e)}
    return {"ok": True, "resource_rows": rows}


def sender(body):
    load()
    import pydantic
    from lx_dtypes.models.contracts import hub_transfer as ht

    model = {"video": ht.HubTransferVideoTransferPayload, "report": ht.HubTransferReportTransferPayload}[body["resource_kind"]]
    try:
        model.model_validate(body)
    except pydantic.ValidationError as e:
        return {"ok": False, "errors": [{"loc": list(err["loc"]), "type": err["type"]} for err in e.errors()]}
    return {"ok": True}


def main():
    cmd, *args = sys.argv[1:]
    if cmd not in ("check", "sender"):
        raise SystemExit(f"unknown command {cmd}")
    out = {"check": check, "sender": sender}[cmd](json.loads(Path(args[0]).read_text()))
    for line in refload.report():
        print(line, file=sys.stderr)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
