"""endoreg-db 1.6.5's own register gate, `TransferJobCreateSerializer` (DRF), as a test
peer for lxgate's sender (tests/hub_export.rs).

  check DSN SPEC_JSON BODY_JSON...
      DSN: a PostgreSQL conninfo (`host=… port=… user=… dbname=…`), an empty database.
      SPEC: the hub's view of the network, {"hub": KEY, "site": KEY, "center": KEY,
      "other_centers": [KEY, …]}: the central hub node, the site node (active), the
      center that owns it, and centers the hub knows that own no node (optional).
      Each BODY is what a site POSTs to the hub's transfer route; the serializer runs on
      it as HubTransferCreateView runs it (`TransferJobCreateSerializer(data=…)
      .is_valid()`). Prints one answer per body: {"ok": true, "resource_rows": …,
      "processing_snapshot": …, "source_node": KEY, "target_node": KEY, "source_center":
      KEY} or {"ok": false, "errors": …} with the serializer's errors as the view
      returns them in its 400.

How it runs on Debian's Python 3.11 (the wheels declare 3.12), every deviation printed:
- Real Django and DRF (the versions endoreg-db declares) with a configured settings
  object: the database is the test's PostgreSQL; the endoreg_db app is registered by a
  plain AppConfig with its name and auto field, because EndoregDbConfig.ready() wires
  Keycloak, Celery signals, system checks and the storage contract, none of which the
  serializer uses.
- The models the serializer touches (Center with the FirstName/LastName it relates to,
  NetworkNode, TransferJob, AnonymizationState) are loaded from their own modules; their
  tables are created from those models by Django's schema editor (Center, NetworkNode,
  the names). Package `__init__`s that import every model, Celery or lx_ai_core (no 3.11 build on PyPI)
  are not run; `endoreg_db.schemas` gets the three names the serializer and TransferJob
  import from it bound from the submodules its `__init__` takes them from.
- endoreg_rust_backend, the compiled extension that decides the anonymization state,
  is the reference's own Rust source from the wheel built for this Python (setup.sh);
  the test fails when it did not load, as the reference's code would.
- refload's syntax shims for PEP 695 statements, and typing.TypedDict is
  typing_extensions.TypedDict (pydantic needs that below 3.12).
Nothing of the validation logic is stubbed or changed.
"""
import json
import sys
import typing
from pathlib import Path

import typing_extensions

import refload

# Packages entered without running their __init__: each imports every model of its tree,
# Celery, or lx_ai_core (no 3.11 build on PyPI); the modules below them load unchanged.
SHELLS = [
    "endoreg_db",
    "endoreg_db.models",
    "endoreg_db.models.administration",
    "endoreg_db.models.administration.center",
    "endoreg_db.models.administration.person",
    "endoreg_db.models.administration.person.names",
    "endoreg_db.models.hub",
    "endoreg_db.models.state",
    "endoreg_db.serializers",
    "endoreg_db.serializers.hub",
    "endoreg_db.services",
    "endoreg_db.services.hub",
    "endoreg_db.services.privacy",
    "endoreg_db.utils",
    "endoreg_db.helpers",
]


def database(dsn):
    kv = dict(part.split("=", 1) for part in dsn.split())
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": kv["dbname"],
        "USER": kv.get("user", ""),
        "HOST": kv.get("host", ""),
        "PORT": kv.get("port", ""),
    }


def setup(dsn):
    typing.TypedDict = typing_extensions.TypedDict
    refload._log.append("environment: typing.TypedDict = typing_extensions.TypedDict (pydantic needs it below Python 3.12)")
    refload.install_syntax_shims("lx_dtypes", "endoreg_db")
    import django
    from django.apps import AppConfig
    from django.conf import settings

    class EndoregDbApp(AppConfig):
        name = "endoreg_db"
        default_auto_field = "django.db.models.BigAutoField"

    refload.stub("lxgate_reference_apps", EndoregDbApp=EndoregDbApp)
    refload._log.append("app: endoreg_db registered by a plain AppConfig (name, BigAutoField); EndoregDbConfig.ready() "
                        "not run (Keycloak settings, Celery signals, system checks, storage contract)")
    settings.configure(
        DATABASES={"default": database(dsn)},
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "lxgate_reference_apps.EndoregDbApp"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    refload._log.append("settings: django.conf.settings.configure(DATABASES=<the test's PostgreSQL>, "
                        "INSTALLED_APPS=[contenttypes, auth, endoreg_db as a plain AppConfig], USE_TZ=True)")
    for pkg in SHELLS:
        refload.package(pkg)
    django.setup()
    refload.reexport("endoreg_db.schemas", "persisted_json",
                     ["validate_transfer_processing_snapshot", "validate_transfer_resource_rows"])
    refload.reexport("endoreg_db.schemas", "hub_payloads", ["validate_transfer_provenance_payload"])

    import endoreg_db.utils.rust_backend as rust_backend

    if not rust_backend._rust_backend_available:
        raise SystemExit("endoreg_rust_backend did not load for this Python: tests/reference/setup.sh builds it "
                         "from the wheel's rust/ source (needs cargo and crates.io)")
    refload._log.append(f"endoreg_rust_backend loaded from {rust_backend.rust_backend.__file__}")

    from endoreg_db.models.administration.person.names.first_name import FirstName
    from endoreg_db.models.administration.person.names.last_name import LastName
    from endoreg_db.models.administration.center.center import Center
    from endoreg_db.models.hub.network_node import NetworkNode
    from endoreg_db.serializers.hub.transfer_job import TransferJobCreateSerializer

    return TransferJobCreateSerializer, (FirstName, LastName, Center, NetworkNode)


def network(models, spec):
    """The hub's rows: the tables from the models, the center, the site node it owns, the hub."""
    from django.db import connection

    FirstName, LastName, Center, NetworkNode = models
    with connection.schema_editor() as editor:
        for model in models:
            editor.create_model(model)
    refload._log.append(f"database: tables of {', '.join(m.__name__ for m in models)} created from their models; "
                        f"rows: center {spec['center']!r}, site node {spec['site']!r} it owns, central hub {spec['hub']!r}, "
                        f"other centers {spec.get('other_centers', [])!r}")
    center = Center.objects.create(name=spec["center"], center_key=spec["center"])
    for other in spec.get("other_centers", []):
        Center.objects.create(name=other, center_key=other)
    NetworkNode.objects.create(node_key=spec["hub"], display_name="hub", role=NetworkNode.Role.CENTRAL_HUB)
    NetworkNode.objects.create(node_key=spec["site"], display_name="site", role=NetworkNode.Role.SITE_NODE,
                               owning_center=center)


def plain(errors):
    """DRF's ErrorDetail lists as the view's JSON 400 carries them."""
    return json.loads(json.dumps(errors))


def check(serializer_class, body):
    s = serializer_class(data=body, context={})
    if not s.is_valid():
        return {"ok": False, "errors": plain(s.errors)}
    data = s.validated_data
    return {
        "ok": True,
        "resource_rows": data["resource_rows"],
        "processing_snapshot": data["processing_snapshot"],
        "source_node": data["source_node"].node_key,
        "target_node": data["target_node"].node_key,
        "source_center": data["source_center"].center_key if data["source_center"] else None,
    }


def main():
    cmd, dsn, spec, *bodies = sys.argv[1:]
    if cmd != "check":
        raise SystemExit(f"unknown command {cmd}")
    serializer_class, models = setup(dsn)
    network(models, json.loads(spec))
    out = [check(serializer_class, json.loads(Path(b).read_text())) for b in bodies]
    for line in refload.report():
        print(line, file=sys.stderr)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
