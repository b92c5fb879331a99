"""The reference SAP IS-H converter as a test oracle: endoreg-db 1.6.5's own
`import_sap_ish_zip` management command (`Command.handle`), run on many zips in one
process so a thousand bundles cost one interpreter start.

    sap_oracle.py RUNTIME_ROOT < jobs.json

jobs.json: {"center_key": ..., "center_name": ..., "jobs": [[zip_path, output_dir], ...]};
every output_dir lies inside RUNTIME_ROOT (the command refuses anything else). Prints one
JSON line per job, {"ok": true} or {"ok": false, "error": "<type>: <message>"}; the
caller reads the pairs from output_dir itself. What was stubbed and shimmed goes to stderr
first. The conversion, the template file, lx-dtypes' payload model and the file writers
are the reference's own code, unchanged.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import refload


class _Out:
    def write(self, _text):
        pass


class _Style:
    def __getattr__(self, _name):
        return lambda text: text


def _never(*_args, **_kwargs):
    raise AssertionError("a stubbed reference function was called on the conversion path")


def load_command(root):
    os.environ["LX_RUNTIME_ROOT"] = str(root)
    for pkg in (
        "endoreg_db",
        "endoreg_db.config",
        "endoreg_db.management",
        "endoreg_db.management.commands",
        "endoreg_db.models",
        "endoreg_db.services",
        "endoreg_db.services.hub",
        "endoreg_db.services.imports",
        "endoreg_db.services.interoperability",
        "endoreg_db.utils",
        "lx_dtypes",
        "lx_dtypes.models",
        "lx_dtypes.models.base",
        "lx_dtypes.models.contracts",
    ):
        refload.package(pkg)
    refload.install_syntax_shims("endoreg_db.", "lx_dtypes.")

    class CommandError(Exception):
        pass

    class BaseCommand:
        def __init__(self):
            self.stdout = _Out()
            self.style = _Style()

    # Django's management framework: only what `Command` subclasses and prints with.
    refload.stub(
        "django.core.management.base",
        BaseCommand=BaseCommand,
        CommandError=CommandError,
        CommandParser=object,
    )
    # Django's file field type, named in annotations of file helpers the command does
    # not call.
    refload.stub("django.db.models.fields.files", FieldFile=object)
    # The Center model and the database-backed ingest: the converter never reaches them
    # without --process; center resolution answers "no database center" and the sidecar
    # takes the center key/name strings as given, as in the reference.
    refload.stub("endoreg_db.models.administration.center.center", Center=object)
    refload.stub(
        "endoreg_db.services.hub.ingest",
        process_preanonymized_watcher_file=_never,
        resolve_declared_upload_center=lambda **_kw: (None, None),
        resolve_default_center=_never,
    )
    # endoreg_db.utils.hashs reads Django settings at import. The conversion uses none
    # of it; the structured file-operation log events name paths by an unkeyed SHA-256
    # (get_bytes_hash is exactly that), and file hashing must never be reached.
    refload.stub(
        "endoreg_db.utils.hashs",
        get_file_hash=_never,
        get_bytes_hash=lambda payload: hashlib.sha256(payload).hexdigest(),
    )
    from endoreg_db.management.commands import import_sap_ish_zip

    return import_sap_ish_zip.Command


def main():
    root = Path(sys.argv[1]).resolve()
    request = json.load(sys.stdin)
    command = load_command(root)
    for line in refload.report():
        print(f"[reference] {line}", file=sys.stderr)
    sys.stderr.flush()
    for zip_path, output_dir in request["jobs"]:
        try:
            command().handle(
                zip_path=zip_path,
                output_dir=output_dir,
                source_system="sap_ish",
                center_name=request["center_name"],
                center_key=request["center_key"],
                process=False,
                manifest_path=str(Path(output_dir).parent / (Path(output_dir).name + ".manifest.json")),
            )
            print(json.dumps({"ok": True}), flush=True)
        except Exception as exc:  # noqa: BLE001 - every refusal is reported, by type
            print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)


if __name__ == "__main__":
    main()
