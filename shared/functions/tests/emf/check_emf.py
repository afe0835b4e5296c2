"""Checks CloudWatch Embedded Metric Format lines: each line is one JSON
object that validates against emf.schema.json (the specification's
structure), is at most 256 KiB (a CloudWatch Logs event), and holds every
member its directives reference: dimension targets as strings, metric
targets as numbers or arrays of at most 100 numbers (what JSON Schema cannot
say). Usage: check_emf.py FILE   (prints one line per problem, exits 1)."""

import json
import numbers
import pathlib
import sys

from jsonschema import Draft202012Validator

MAX_EVENT_BYTES = 256 * 1024
MAX_VALUES = 100


def is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def reference_problems(doc):
    for i, directive in enumerate(doc["_aws"]["CloudWatchMetrics"]):
        for dimension_set in directive["Dimensions"]:
            for name in dimension_set:
                if name not in doc:
                    yield f"directive {i}: dimension {name!r} is not a member of the root"
                elif not isinstance(doc[name], str):
                    yield f"directive {i}: dimension {name!r} is {doc[name]!r}, not a string"
        for metric in directive["Metrics"]:
            name = metric["Name"]
            value = doc.get(name)
            if name not in doc:
                yield f"directive {i}: metric {name!r} is not a member of the root"
            elif isinstance(value, list):
                if len(value) > MAX_VALUES or not all(is_number(v) for v in value):
                    yield f"directive {i}: metric {name!r} is not an array of at most {MAX_VALUES} numbers"
            elif not is_number(value):
                yield f"directive {i}: metric {name!r} is {value!r}, not a number"


def main(path):
    schema = json.loads((pathlib.Path(__file__).parent / "emf.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    problems, count = [], 0
    for n, line in enumerate(pathlib.Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        count += 1
        if len(line.encode()) > MAX_EVENT_BYTES:
            problems.append(f"line {n}: longer than {MAX_EVENT_BYTES} bytes")
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {n}: not JSON: {e}")
            continue
        errors = [f"line {n}: {e.json_path}: {e.message}" for e in validator.iter_errors(doc)]
        problems.extend(errors)
        if not errors:
            problems.extend(f"line {n}: {p}" for p in reference_problems(doc))
    for p in problems:
        print(p)
    if count == 0:
        print(f"{path}: no EMF line to check")
        return 1
    print(f"{count} EMF line(s) checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
