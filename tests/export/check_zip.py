"""Opens export parts with Python's standard zipfile, as a receiver would, and reports what they
hold: for each part its entries with sizes and SHA-256, whether zipfile's own CRC check passed,
whether every manifest row matches its file, and the last part's listing of all parts."""
import csv
import hashlib
import io
import json
import sys
import zipfile

out = []
for path in sys.argv[1:]:
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
        files = {}
        for info in z.infolist():
            data = z.read(info)
            files[info.filename] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        rows = list(csv.DictReader(io.StringIO(z.read("manifest.csv").decode())))
        manifest = json.loads(z.read("manifest.json"))
        csv_ok = all(files.get(r["file"], {}).get("sha256") == r["sha256"] for r in rows)
        json_ok = all(files.get(r["file"], {}).get("sha256") == r["sha256"] for r in manifest["recordings"])
        out.append({
            "path": path,
            "crc_ok": bad is None,
            "files": files,
            "csv_rows": len(rows),
            "manifest_ok": csv_ok and json_ok and len(rows) == len(manifest["recordings"]),
            "ids": [r["id"] for r in rows],
            "part": manifest["part"],
            "parts": manifest["parts"],
            "all_parts": manifest.get("allParts"),
        })
print(json.dumps(out))
