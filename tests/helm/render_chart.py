#!/usr/bin/env python3
"""Lints and renders charts/opname with Helm's own library (PyPI helm-python-sdk).

Usage: render_chart.py CHART_DIR VALUES_JSON
Prints JSON: {"lint": <helm lint report>, "manifests": {path: text}} or, when Helm refuses the
values (schema, `required`), {"refused": <Helm's message>}.
"""
import json
import sys

from helm_python import chart, errors


def main() -> None:
    path, values = sys.argv[1], json.loads(sys.argv[2])
    try:
        manifests = chart.Chart.load(path).render(values, name="opname", namespace="opname-system", is_install=True)
    except errors.HelmError as e:
        print(json.dumps({"refused": str(e)}))
        return
    report = chart.lint(path, values, strict=True, namespace="opname-system")
    print(json.dumps({"lint": report, "manifests": manifests}))


if __name__ == "__main__":
    main()
