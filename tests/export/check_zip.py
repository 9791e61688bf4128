"""Opens export parts with Python's standard zipfile, as a receiver would, and reports what they
hold: for each part its entries with sizes and SHA-256, whether zipfile's own CRC check passed,
whether every manifest row matches its file, and the last part's listing of all parts.

`manifest.csv` is read the way Excel reads it for the organisation's locale (first argument,
`en` or `nl`): UTF-8 only behind a byte-order mark, the locale's list separator (`;` in Dutch),
its column names, and `="…"` cells taken as the text inside them."""
import csv
import hashlib
import io
import json
import sys
import zipfile

LOCALES = {
    "en": (",", {}),
    "nl": (";", {"bestand": "file", "gebruiker": "user", "van": "from", "naar": "to",
                 "volledig": "complete", "duur_seconden": "duration_seconds"}),
}


def excel_cell(value):
    """What Excel shows for a cell: `="+3120…"` is the text `+3120…`."""
    if value.startswith('="') and value.endswith('"'):
        return value[2:-1].replace('""', '"')
    return value


def read_csv(raw, locale):
    separator, names = LOCALES[locale]
    bom = raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8-sig" if bom else "cp1252")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    header = next(reader)
    keys = []
    for column in header:
        bare = column.split(" (")[0]
        keys.append(names.get(bare, bare))
        if bare in ("start", "end", "begin", "einde"):
            keys[-1] = {"begin": "start", "einde": "end"}.get(bare, bare)
    rows = [dict(zip(keys, (excel_cell(c) for c in line))) for line in reader if line]
    return bom, header, rows


locale = sys.argv[1]
out = []
for path in sys.argv[2:]:
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
        files = {}
        for info in z.infolist():
            data = z.read(info)
            files[info.filename] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        bom, header, rows = read_csv(z.read("manifest.csv"), locale)
        manifest = json.loads(z.read("manifest.json"))
        csv_ok = all(files.get(r["file"], {}).get("sha256") == r["sha256"] for r in rows)
        json_ok = all(files.get(r["file"], {}).get("sha256") == r["sha256"] for r in manifest["recordings"])
        out.append({
            "path": path,
            "crc_ok": bad is None,
            "files": files,
            "csv_rows": len(rows),
            "csv_bom": bom,
            "csv_header": header,
            "csv_cells": {r["id"]: r for r in rows},
            "manifest_ok": csv_ok and json_ok and len(rows) == len(manifest["recordings"]),
            "ids": [r["id"] for r in rows],
            "part": manifest["part"],
            "parts": manifest["parts"],
            "time_zone": manifest.get("timeZone"),
            "all_parts": manifest.get("allParts"),
        })
print(json.dumps(out))
