"""Renders a pytest-benchmark JSON file as the Markdown table kept in bench/RESULTS.md.

    python -m pytest bench --benchmark-json=.benchmarks/bench.json
    python bench/report.py .benchmarks/bench.json            # print
    python bench/report.py .benchmarks/bench.json --append   # append to bench/RESULTS.md
"""

import argparse
import json
import os


def render(data: dict) -> str:
    env = data.get("fastuda", {})
    commit = data.get("commit_info", {})
    lines = [
        f"## {env.get('device', '?')}, {data.get('datetime', '?')[:10]}",
        "",
        f"torch {env.get('torch', '?')}, triton {env.get('triton', '?')}, "
        f"commit {commit.get('id', '?')[:10]}{' (dirty)' if commit.get('dirty') else ''}",
        "",
        "| benchmark | provider | median ms (host) | event ms | GB/s (event) | of copy BW | TFLOP/s | peak extra MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for bench in sorted(data["benchmarks"], key=lambda b: (b["group"] or "", b["extra_info"].get("provider", ""))):
        info = bench["extra_info"]
        median_ms = bench["stats"]["median"] * 1e3
        lines.append(
            f"| {bench['group']} | {info.get('provider', '')} | {median_ms:.3f} | {info.get('event_ms', '-')} "
            f"| {info.get('event_GB/s', info.get('GB/s', '-'))} | {info.get('frac_of_copy', '-')} "
            f"| {info.get('TFLOP/s', '-')} "
            f"| {info.get('peak_extra_MiB', '-')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json_file")
    parser.add_argument("--append", action="store_true", help="append the table to bench/RESULTS.md")
    args = parser.parse_args()
    with open(args.json_file) as f:
        table = render(json.load(f))
    print(table)
    if args.append:
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"), "a") as f:
            f.write("\n" + table)


if __name__ == "__main__":
    main()
