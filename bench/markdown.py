"""``docs/bench.md``: the benchmark JSON as tables, rewritten by every ``python -m bench`` run.

The docs link to this page rather than quote numbers by hand, so every figure in
them is one the benchmark measured, on the machine named at the top of each section.
"""

from __future__ import annotations

from typing import Any


def _machine(section: dict[str, Any]) -> str:
    m = section.get("machine", {})
    facts = ", ".join(f"{k} {v}" for k, v in m.items())
    return f"Measured on: {facts}; {section.get('wall_s', '?')} s." if facts else ""


def _num(value: Any, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def samplers(section: dict[str, Any]) -> list[str]:
    lines = ["## Digit samplers (`--sections samplers`)", "", _machine(section), "",
             "Ten digits (one of each label) per run; accuracy and MS-SSIM come from the model card's sampler sweep "
             "(the seed and the images per digit they were measured on are in the last column).", "",
             "| configuration | sampler-steps | guidance | interval | NFE | s / 10 digits | speed-up vs DDIM-25 | accuracy | MS-SSIM | measured on |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in section.get("configurations", []):
        interval = "-" if not row["guidance_interval"] else f"[{row['guidance_interval'][0]}, {row['guidance_interval'][1]}]"
        source = f"seed {row['accuracy_seed']}, {row['accuracy_images_per_digit']} per digit" if row.get("accuracy_seed") is not None else "-"
        lines.append(f"| {row['name']} | {row['sampler']}-{row['steps'] or 400} | {row['guidance_scale']:g} | {interval} | {row['nfe']} "
                     f"| {row['s_per_10_digits']:.2f} | {row['speedup_vs_ddim25']:.2f}x | {_num(row.get('accuracy'))} | {_num(row.get('msssim'))} | {source} |")
    fast = section.get("cpu_fast_path")
    if fast:
        lines += ["", f"CPU fast path: {fast['what']}, {fast['threads']} threads; bf16 instructions on this CPU: "
                  f"{'yes' if fast['bf16_cpu_support'] else 'no'} (bf16 autocast changes the noise prediction by up to "
                  f"{fast['bf16_max_abs_error_of_noise_prediction']})." + (f" torch.compile took {fast['compile_s']} s." if "compile_s" in fast else ""),
                  "", "| change | ms | speed-up |", "|---|---|---|"]
        lines += [f"| {r['change']} | {r['ms']:.1f} | {r['speedup']:.2f}x |" for r in fast["rows"]]
    return lines


def service(section: dict[str, Any]) -> list[str]:
    lines = ["## Service (`--sections service`)", "", _machine(section), "",
             "Latency at one client, the service against the same model call in this process (ms):", "",
             "| request | service p50 | service p95 | in-process p50 | in-process p95 | p50 ratio |", "|---|---|---|---|---|---|"]
    for name, row in section.get("latency", {}).items():
        lines.append(f"| {name} | {_num(row.get('p50_ms'), '{:.1f}')} | {_num(row.get('p95_ms'), '{:.1f}')} | "
                     f"{_num(row.get('in_process_p50_ms'), '{:.1f}')} | {_num(row.get('in_process_p95_ms'), '{:.1f}')} | {_num(row.get('ratio_p50'), '{:.2f}')} |")
    for name, table in section.get("throughput", {}).items():
        lines += ["", f"Throughput, {name} (requests/s), with and without micro-batching:", "",
                  "| clients | batched | unbatched | ratio | mean batch (requests) |", "|---|---|---|---|---|"]
        for clients, row in table.get("batched", {}).items():
            plain = table.get("unbatched", {}).get(clients, {})
            lines.append(f"| {clients} | {row['rps']:.1f} | {_num(plain.get('rps'), '{:.1f}')} | "
                         f"{_num(table.get('ratio_batched_over_unbatched', {}).get(clients), '{:.2f}')} | {_num(row.get('mean_batch_requests'), '{:.1f}')} |")
    return lines


RENDERERS = {"samplers": samplers, "service": service}


def render(results: dict[str, Any]) -> str:
    lines = ["# Benchmarks", "", "Written by `python -m bench` (`make bench`) from `docs/bench.json`; do not edit by hand.", ""]
    for name, section in results.items():
        if name in RENDERERS:
            lines += [*RENDERERS[name](section), ""]
    return "\n".join(lines).rstrip() + "\n"
