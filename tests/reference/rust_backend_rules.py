"""The decisions of one build of endoreg_rust_backend that endoreg-db's hub serializer
relies on, as JSON: native capabilities, the anonymization status rules, the status for
every combination of the video (7) and report (5) state flags (in itertools.product
order over the flag names given), and each status's phase.

  python rust_backend_rules.py PATH_TO_EXTENSION_SO

Run once with the 3.12 interpreter on the wheel's shipped cp312 binary and once with the
venv's 3.11 on the one setup.sh builds from the wheel's rust/ source: equal output says
the build the tests use decides as the shipped binary does (tests/hub_export.rs,
the_rust_backend_built_here_decides_as_the_shipped_one). tests/hub.rs holds lxgate's own
derivation against it.
"""
import importlib.util
import itertools
import json
import sys

VIDEO = ["processing_error", "anonymization_validated", "sensitive_meta_processed", "frames_extracted",
         "anonymized", "was_created", "processing_started"]
REPORT = ["processing_error", "anonymization_validated", "sensitive_meta_processed", "anonymized",
          "processing_started"]


def main():
    spec = importlib.util.spec_from_file_location("endoreg_rust_backend", sys.argv[1])
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    video = [m.derive_anonymization_status(**dict(zip(VIDEO, bits)))
             for bits in itertools.product([False, True], repeat=len(VIDEO))]
    report = [m.derive_report_anonymization_status(**dict(zip(REPORT, bits)))
              for bits in itertools.product([False, True], repeat=len(REPORT))]
    print(json.dumps({
        "capabilities": m.native_capabilities(),
        "rules": [m.anonymization_status_rules(False), m.anonymization_status_rules(True)],
        "video": video,
        "video_flags": VIDEO,
        "report": report,
        "report_flags": REPORT,
        "phase": {s: m.anonymization_status_phase(s) for s in sorted(set(video) | set(report))},
    }, sort_keys=True))


if __name__ == "__main__":
    main()
